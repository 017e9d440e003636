// Media requests: per-kind parameter validation (400 naming the parameter), OpenAI image
// fields, and the task object's shape.
#include "gateway/protocols/media.h"

#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"

namespace nexusflow::gateway::media {
namespace {

namespace json = boost::json;

MediaRequest MustValidate(std::string_view kind, std::string_view body) {
  json::object fields = json::parse(body).as_object();
  MediaRequest out;
  HttpError error;
  EXPECT_TRUE(ValidateParams(kind, fields, &out, &error)) << body << ": " << error.message;
  return out;
}

std::string RefusedParam(std::string_view kind, std::string_view body) {
  json::object fields = json::parse(body).as_object();
  MediaRequest out;
  HttpError error;
  EXPECT_FALSE(ValidateParams(kind, fields, &out, &error)) << body;
  EXPECT_EQ(error.status, 400) << body;
  return error.param;
}

TEST(MediaParamsTest, ImageDefaultsAndDashScopeSpelling) {
  MediaRequest r = MustValidate("image", R"({"prompt":"a fox"})");
  EXPECT_EQ(r.kind, "image");
  EXPECT_EQ(r.images, 1);
  EXPECT_EQ(r.video_seconds, 0);
  EXPECT_EQ(json::serialize(r.params), R"({"prompt":"a fox","n":1,"size":"1024*1024"})");
  r = MustValidate("image", R"({"prompt":"a fox","n":4,"size":"768x1344","seed":7,"negative_prompt":"blur"})");
  EXPECT_EQ(r.images, 4);
  EXPECT_EQ(r.params.at("size").as_string(), "768*1344");
  EXPECT_EQ(r.params.at("seed").as_int64(), 7);
  EXPECT_EQ(r.params.at("negative_prompt").as_string(), "blur");
  EXPECT_EQ(MustValidate("image", R"({"prompt":"x","n":2.0})").images, 2);
}

TEST(MediaParamsTest, VideoDefaultsAndLimits) {
  MediaRequest r = MustValidate("video", R"({"prompt":"waves","duration":10,"resolution":"1080P"})");
  EXPECT_EQ(r.video_seconds, 10);
  EXPECT_EQ(r.images, 0);
  EXPECT_EQ(json::serialize(r.params), R"({"prompt":"waves","duration":10,"resolution":"1080P"})");
  r = MustValidate("video", R"({"prompt":"waves"})");
  EXPECT_EQ(r.video_seconds, kDefaultVideoSeconds);
  EXPECT_EQ(r.params.at("resolution").as_string(), "720P");
  r = MustValidate("video", R"({"prompt":"waves","size":"1280x720"})");
  EXPECT_EQ(r.params.at("size").as_string(), "1280*720");
  EXPECT_FALSE(r.params.contains("resolution"));
}

TEST(MediaParamsTest, EachBadParameterIsNamed) {
  EXPECT_EQ(RefusedParam("image", R"({})"), "prompt");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":""})"), "prompt");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":7})"), "prompt");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","n":0})"), "n");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","n":5})"), "n");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","n":1.5})"), "n");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","n":2555555555555555555555555555555555555555})"), "n");
  EXPECT_EQ(RefusedParam("video", R"({"prompt":"x","duration":-1e300})"), "duration");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","size":"4096x4096"})"), "size");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","size":"1024x"})"), "size");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","size":"1024x1024x2"})"), "size");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","seed":-1})"), "seed");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","watermark":"yes"})"), "watermark");
  EXPECT_EQ(RefusedParam("image", R"({"prompt":"x","duration":5})"), "duration");
  EXPECT_EQ(RefusedParam("video", R"({"prompt":"x","duration":0})"), "duration");
  EXPECT_EQ(RefusedParam("video", R"({"prompt":"x","duration":16})"), "duration");
  EXPECT_EQ(RefusedParam("video", R"({"prompt":"x","duration":"10"})"), "duration");
  EXPECT_EQ(RefusedParam("video", R"({"prompt":"x","resolution":"720p"})"), "resolution");
  EXPECT_EQ(RefusedParam("video", R"({"prompt":"x","resolution":"720P","size":"1280x720"})"), "size");
  EXPECT_EQ(RefusedParam("video", R"({"prompt":"x","n":2})"), "n");
  EXPECT_EQ(RefusedParam("video", R"({"prompt":"x","fps":24})"), "fps");
  std::string long_prompt(kMaxPromptBytes + 1, 'a');
  EXPECT_EQ(RefusedParam("video", absl::StrCat(R"({"prompt":")", long_prompt, R"("})")), "prompt");
}

TEST(MediaParamsTest, BodyNeedsAnObjectWithAModel) {
  json::object fields;
  std::string model;
  HttpError error;
  EXPECT_FALSE(ParseBody("[1]", &fields, &model, &error));
  EXPECT_EQ(error.status, 400);
  EXPECT_FALSE(ParseBody(R"({"prompt":"x"})", &fields, &model, &error));
  EXPECT_EQ(error.param, "model");
  ASSERT_TRUE(ParseBody(R"({"model":"wan2.6-t2i","prompt":"x"})", &fields, &model, &error));
  EXPECT_EQ(model, "wan2.6-t2i");
  EXPECT_FALSE(fields.contains("model"));
}

TEST(ImagesRequestTest, OpenAiFieldsShapeTheAnswerNotTheTask) {
  MediaRequest r;
  bool b64 = true;
  HttpError error;
  ASSERT_TRUE(ParseImagesRequest(
      R"({"model":"wan2.6-t2i","prompt":"a fox","n":2,"size":"1024x1024","quality":"hd","style":"vivid","user":"u1"})",
      &r, &b64, &error))
      << error.message;
  EXPECT_FALSE(b64);
  EXPECT_EQ(r.model, "wan2.6-t2i");
  EXPECT_EQ(r.images, 2);
  EXPECT_EQ(json::serialize(r.params), R"({"prompt":"a fox","n":2,"size":"1024*1024"})");
  ASSERT_TRUE(ParseImagesRequest(R"({"model":"m","prompt":"x","response_format":"b64_json"})", &r, &b64, &error));
  EXPECT_TRUE(b64);
  for (auto [body, param] : std::vector<std::pair<const char*, const char*>>{
           {R"({"model":"m","prompt":"x","response_format":"png"})", "response_format"},
           {R"({"model":"m","prompt":"x","quality":"ultra"})", "quality"},
           {R"({"model":"m","prompt":"x","style":"bold"})", "style"},
           {R"({"model":"m","prompt":"x","n":5})", "n"},
           {R"({"prompt":"x"})", "model"}}) {
    MediaRequest bad;
    EXPECT_FALSE(ParseImagesRequest(body, &bad, &b64, &error)) << body;
    EXPECT_EQ(error.param, param) << body;
  }
}

TEST(TaskObjectTest, FinalTasksCarryTheirResultErrorAndUsage) {
  connector::v1::Task t;
  t.set_id("task_1");
  t.set_model("happyhorse-1.0-t2v");
  t.set_kind("video");
  t.set_status(connector::v1::TASK_STATUS_QUEUED);
  t.set_params_json(R"({"prompt":"waves","duration":10})");
  t.mutable_created_at()->set_seconds(1700000000);
  t.mutable_updated_at()->set_seconds(1700000001);
  EXPECT_EQ(TaskBody(t),
            R"({"id":"task_1","object":"task","model":"happyhorse-1.0-t2v","kind":"video","status":"queued",)"
            R"("created_at":1700000000,"updated_at":1700000001,"params":{"prompt":"waves","duration":10}})");
  t.set_status(connector::v1::TASK_STATUS_SUCCEEDED);
  t.mutable_result()->add_urls("http://x/video.mp4");
  t.mutable_result()->mutable_expires_at()->set_seconds(1700086400);
  t.mutable_usage()->set_video_count(1);
  t.mutable_usage()->set_video_duration_seconds(10);
  json::object o = TaskObject(t);
  EXPECT_EQ(json::serialize(o.at("result")), R"({"urls":["http://x/video.mp4"],"expires_at":1700086400})");
  EXPECT_EQ(json::serialize(o.at("usage")), R"({"video_count":1,"video_seconds":10})");
  EXPECT_FALSE(o.contains("error"));

  connector::v1::Task f;
  f.set_kind("image");
  f.set_status(connector::v1::TASK_STATUS_FAILED);
  f.mutable_error()->set_code("upstream_failed");
  f.mutable_error()->set_message("no");
  o = TaskObject(f);
  EXPECT_EQ(json::serialize(o.at("error")), R"({"code":"upstream_failed","message":"no"})");
  EXPECT_EQ(json::serialize(o.at("usage")), R"({"image_count":0})");
  EXPECT_FALSE(o.contains("result"));
}

TEST(TaskObjectTest, ListPagesWithACursorOnlyWhenThereIsMore) {
  connector::v1::ListTasksResponse page;
  EXPECT_EQ(TaskListBody(page), R"({"object":"list","data":[],"has_more":false})");
  page.add_tasks()->set_id("task_2");
  page.set_has_more(true);
  page.set_next_cursor("abc");
  json::object o = json::parse(TaskListBody(page)).as_object();
  EXPECT_EQ(o.at("next_cursor").as_string(), "abc");
  EXPECT_EQ(o.at("data").as_array().size(), 1u);
}

TEST(ImagesBodyTest, UrlsOrBase64) {
  EXPECT_EQ(ImagesBody(5, {"http://a"}, {}), R"({"created":5,"data":[{"url":"http://a"}]})");
  EXPECT_EQ(ImagesBody(5, {}, {"iVBO"}), R"({"created":5,"data":[{"b64_json":"iVBO"}]})");
}

}  // namespace
}  // namespace nexusflow::gateway::media
