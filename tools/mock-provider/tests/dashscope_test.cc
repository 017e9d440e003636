// DashScope's async media protocol in the mock, driven by a clock the test holds: submission
// and its validation, PENDING → RUNNING → SUCCEEDED, failures (marker and share), partial
// image results, cancel of a pending task only, UNKNOWN ids, and the served result files.
#include "dashscope.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <string>

#include "libs/common/image_size.h"

namespace nexusflow::mock {
namespace {

namespace json = boost::json;
using Clock = DashScopeTasks::Clock;
using std::chrono::milliseconds;

const Clock::time_point kStart{std::chrono::hours(1)};

std::string ImageBody(const std::string& prompt,
                      const std::string& parameters = R"({"size":"1024*1024","n":2})") {
  return R"({"model":"wan2.6-t2i","input":{"prompt":")" + prompt + R"("},"parameters":)" +
         parameters + "}";
}

std::string VideoBody(const std::string& prompt,
                      const std::string& parameters = R"({"duration":10,"resolution":"720P"})") {
  return R"({"model":"happyhorse-1.0-t2v","input":{"prompt":")" + prompt + R"("},"parameters":)" +
         parameters + "}";
}

class DashScopeTest : public ::testing::Test {
 protected:
  DashScopeTasks tasks_{DashScopeOptions{1000, 0}};

  // Submits and returns the task id (empty on failure).
  std::string Submit(MediaKind kind, const std::string& body, Clock::time_point now = kStart) {
    const DashScopeAnswer answer = tasks_.Submit(kind, body, "enable", "mock:9", "req-1", now);
    EXPECT_EQ(answer.status, 200) << answer.body;
    if (answer.status != 200) return {};
    const json::object parsed = json::parse(answer.body).as_object();
    EXPECT_EQ(parsed.at("request_id").as_string(), "req-1");
    EXPECT_EQ(parsed.at("output").at("task_status").as_string(), "PENDING");
    return std::string(parsed.at("output").at("task_id").as_string());
  }

  json::object Poll(const std::string& id, Clock::time_point now) {
    const DashScopeAnswer answer = tasks_.Get(id, "req-2", now);
    EXPECT_EQ(answer.status, 200);
    return json::parse(answer.body).as_object();
  }

  std::string StatusAt(const std::string& id, Clock::time_point now) {
    return std::string(Poll(id, now).at("output").at("task_status").as_string());
  }

  // The rejection of `body`: {status, code, message}.
  json::object Reject(MediaKind kind, const std::string& body, int status = 400) {
    const DashScopeAnswer answer = tasks_.Submit(kind, body, "enable", "mock:9", "req-3", kStart);
    EXPECT_EQ(answer.status, status) << answer.body;
    json::object parsed = json::parse(answer.body).as_object();
    EXPECT_EQ(parsed.at("request_id").as_string(), "req-3");
    return parsed;
  }
};

TEST_F(DashScopeTest, ImageTaskMovesPendingRunningSucceeded) {
  const std::string id = Submit(MediaKind::kImage, ImageBody("a red fox"));
  ASSERT_FALSE(id.empty());
  EXPECT_EQ(StatusAt(id, kStart), "PENDING");
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(249)), "PENDING");
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(250)), "RUNNING");
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(999)), "RUNNING");
  const json::object done = Poll(id, kStart + milliseconds(1000));
  const json::object& output = done.at("output").as_object();
  EXPECT_EQ(output.at("task_status").as_string(), "SUCCEEDED");
  EXPECT_EQ(output.at("task_id").as_string(), id);
  const json::array& results = output.at("results").as_array();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].at("url").as_string(),
            "http://mock:9/mock/dashscope/files/" + id + "/0.png");
  EXPECT_EQ(results[1].at("url").as_string(),
            "http://mock:9/mock/dashscope/files/" + id + "/1.png");
  EXPECT_EQ(done.at("usage").at("image_count").as_int64(), 2);
  // Polling again answers the same URLs.
  EXPECT_EQ(Poll(id, kStart + milliseconds(5000)).at("output").at("results"), output.at("results"));
}

TEST_F(DashScopeTest, VideoTaskReportsUrlAndSeconds) {
  const std::string id = Submit(MediaKind::kVideo, VideoBody("waves [mock:task-ms=0]"));
  const json::object done = Poll(id, kStart);
  EXPECT_EQ(done.at("output").at("task_status").as_string(), "SUCCEEDED");
  EXPECT_EQ(done.at("output").at("video_url").as_string(),
            "http://mock:9/mock/dashscope/files/" + id + "/video.mp4");
  const json::object& usage = done.at("usage").as_object();
  EXPECT_EQ(usage.at("video_duration").as_int64(), 10);
  EXPECT_EQ(usage.at("duration").as_int64(), 10);
  EXPECT_EQ(usage.at("video_count").as_int64(), 1);
  EXPECT_EQ(usage.at("video_ratio").as_string(), "1280*720");
}

TEST_F(DashScopeTest, DefaultsWhenParametersAreAbsent) {
  const std::string image =
      Submit(MediaKind::kImage, R"({"model":"wan2.6-t2i","input":{"prompt":"x"}})");
  EXPECT_EQ(Poll(image, kStart + milliseconds(1000)).at("usage").at("image_count").as_int64(),
            kDefaultImagesPerTask);
  const std::string video = Submit(MediaKind::kVideo, R"({"model":"v","input":{"prompt":"x"}})");
  EXPECT_EQ(Poll(video, kStart + milliseconds(1000)).at("usage").at("duration").as_int64(),
            kDefaultVideoSeconds);
}

TEST_F(DashScopeTest, TaskMsMarkerReplacesTheDefaultDuration) {
  const std::string id = Submit(MediaKind::kImage, ImageBody("x [mock:task-ms=8000]"));
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(1999)), "PENDING");
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(7999)), "RUNNING");
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(8000)), "SUCCEEDED");
}

TEST_F(DashScopeTest, FailMarkerEndsFailedWithCodeAndNoUsage) {
  const std::string id = Submit(MediaKind::kVideo, VideoBody("x [mock:fail]"));
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(500)), "RUNNING");
  const json::object done = Poll(id, kStart + milliseconds(1000));
  EXPECT_EQ(done.at("output").at("task_status").as_string(), "FAILED");
  EXPECT_FALSE(done.at("output").at("code").as_string().empty());
  EXPECT_FALSE(done.at("output").at("message").as_string().empty());
  EXPECT_FALSE(done.contains("usage"));
  EXPECT_FALSE(done.at("output").as_object().contains("video_url"));
}

TEST_F(DashScopeTest, ImagesMarkerGivesPartialSuccessBilledByImageCount) {
  const std::string id = Submit(MediaKind::kImage, ImageBody("x [mock:images=1]", R"({"n":3})"));
  const json::object done = Poll(id, kStart + milliseconds(1000));
  EXPECT_EQ(done.at("output").at("task_status").as_string(), "SUCCEEDED");
  const json::array& results = done.at("output").at("results").as_array();
  ASSERT_EQ(results.size(), 3u);
  EXPECT_TRUE(results[0].as_object().contains("url"));
  EXPECT_FALSE(results[1].as_object().contains("url"));
  EXPECT_FALSE(results[2].at("code").as_string().empty());
  EXPECT_EQ(done.at("usage").at("image_count").as_int64(), 1);
  EXPECT_EQ(done.at("output").at("task_metrics").at("FAILED").as_int64(), 2);
}

TEST_F(DashScopeTest, NoImageProducedIsAFailedTask) {
  const std::string id = Submit(MediaKind::kImage, ImageBody("x [mock:images=0]"));
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(1000)), "FAILED");
}

TEST(DashScopeFailShareTest, FailPercentFailsThatShareSpreadEvenly) {
  DashScopeTasks tasks{DashScopeOptions{0, 25}};
  int failed = 0;
  std::string pattern;
  for (int i = 0; i < 8; ++i) {
    const DashScopeAnswer answer =
        tasks.Submit(MediaKind::kVideo, VideoBody("x"), "enable", "h", "r", kStart);
    const std::string id(json::parse(answer.body).at("output").at("task_id").as_string());
    const std::string status(
        json::parse(tasks.Get(id, "r", kStart).body).at("output").at("task_status").as_string());
    pattern += status == "FAILED" ? 'F' : 'S';
    failed += status == "FAILED";
  }
  EXPECT_EQ(failed, 2);
  EXPECT_EQ(pattern, "SSSFSSSF");
}

TEST_F(DashScopeTest, CancelWorksOnlyWhilePending) {
  const std::string pending = Submit(MediaKind::kVideo, VideoBody("x"));
  const DashScopeAnswer canceled = tasks_.Cancel(pending, "req-4", kStart + milliseconds(100));
  EXPECT_EQ(canceled.status, 200) << canceled.body;
  EXPECT_EQ(json::parse(canceled.body).at("request_id").as_string(), "req-4");
  EXPECT_EQ(StatusAt(pending, kStart + milliseconds(100)), "CANCELED");
  EXPECT_EQ(StatusAt(pending, kStart + milliseconds(5000)), "CANCELED");
  EXPECT_FALSE(
      tasks_.File("/mock/dashscope/files/" + pending + "/video.mp4", kStart + milliseconds(5000)));

  const std::string running = Submit(MediaKind::kVideo, VideoBody("x"));
  const DashScopeAnswer refused = tasks_.Cancel(running, "req-5", kStart + milliseconds(300));
  EXPECT_EQ(refused.status, 400);
  const json::value body = json::parse(refused.body);
  EXPECT_EQ(body.at("code").as_string(), "UnsupportedOperation");
  EXPECT_EQ(body.at("request_id").as_string(), "req-5");
  EXPECT_EQ(StatusAt(running, kStart + milliseconds(1000)), "SUCCEEDED");

  EXPECT_EQ(tasks_.Cancel(running, "req-6", kStart + milliseconds(2000)).status,
            400);  // already final
  EXPECT_EQ(tasks_.Cancel("never-issued", "req-7", kStart).status, 400);
}

TEST_F(DashScopeTest, ListShowsEverySubmissionInOrderWithItsPromptAndStatus) {
  const std::string first = Submit(MediaKind::kImage, ImageBody("one"));
  const std::string again = Submit(MediaKind::kImage, ImageBody("one"));
  const std::string video = Submit(MediaKind::kVideo, VideoBody("two [mock:fail]"), kStart + milliseconds(500));
  const DashScopeAnswer listed = tasks_.List(kStart + milliseconds(1000));
  EXPECT_EQ(listed.status, 200);
  const json::object body = json::parse(listed.body).as_object();
  EXPECT_EQ(body.at("object").as_string(), "list");
  const json::array& data = body.at("data").as_array();
  ASSERT_EQ(data.size(), 3u);
  EXPECT_EQ(data[0].at("task_id").as_string(), first);
  EXPECT_EQ(data[1].at("task_id").as_string(), again);
  EXPECT_EQ(data[2].at("task_id").as_string(), video);
  EXPECT_EQ(data[0].at("prompt").as_string(), "one");
  EXPECT_EQ(data[1].at("prompt").as_string(), "one");
  EXPECT_EQ(data[2].at("prompt").as_string(), "two [mock:fail]");
  EXPECT_EQ(data[0].at("kind").as_string(), "image");
  EXPECT_EQ(data[2].at("kind").as_string(), "video");
  EXPECT_EQ(data[2].at("model").as_string(), "happyhorse-1.0-t2v");
  EXPECT_EQ(data[0].at("task_status").as_string(), "SUCCEEDED");
  EXPECT_EQ(data[2].at("task_status").as_string(), "RUNNING");
  // Forgotten tasks leave the list.
  const json::object later =
      json::parse(tasks_.List(kStart + milliseconds(1001) + kTaskRetention).body).as_object();
  ASSERT_EQ(later.at("data").as_array().size(), 1u);
  EXPECT_EQ(later.at("data").as_array()[0].at("task_id").as_string(), video);
}

TEST_F(DashScopeTest, UnknownAndForgottenTasksAnswerUnknown) {
  const json::object unknown = Poll("0385dc79-5ff8-4d82-bcb6-000000000000", kStart);
  EXPECT_EQ(unknown.at("output").at("task_status").as_string(), "UNKNOWN");
  EXPECT_EQ(unknown.at("output").at("task_id").as_string(), "0385dc79-5ff8-4d82-bcb6-000000000000");

  const std::string id = Submit(MediaKind::kImage, ImageBody("x"));
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(1000) + kTaskRetention), "SUCCEEDED");
  EXPECT_EQ(StatusAt(id, kStart + milliseconds(1001) + kTaskRetention), "UNKNOWN");
}

TEST_F(DashScopeTest, SynchronousCallIsRefusedAsDashScopeDoes) {
  const DashScopeAnswer answer =
      tasks_.Submit(MediaKind::kImage, ImageBody("x"), "", "h", "req-8", kStart);
  EXPECT_EQ(answer.status, 403);
  const json::value body = json::parse(answer.body);
  EXPECT_EQ(body.at("code").as_string(), "AccessDenied");
  EXPECT_EQ(body.at("message").as_string(), "current user api does not support synchronous calls");
  EXPECT_EQ(body.at("request_id").as_string(), "req-8");
}

TEST_F(DashScopeTest, InvalidRequestsNameTheParameter) {
  struct Case {
    MediaKind kind;
    std::string body;
    std::string param;
  };
  const Case cases[] = {
      {MediaKind::kImage, "not json", "body"},
      {MediaKind::kImage, R"({"input":{"prompt":"x"}})", "'model'"},
      {MediaKind::kImage, R"({"model":"m"})", "'input'"},
      {MediaKind::kImage, R"({"model":"m","input":{"prompt":""}})", "'input.prompt'"},
      {MediaKind::kImage, R"({"model":"m","input":{}})", "'input.prompt'"},
      {MediaKind::kImage, R"({"model":"m","input":{"prompt":"x"},"parameters":[]})",
       "'parameters'"},
      {MediaKind::kImage, ImageBody("x", R"({"size":"1024x1024"})"), "'parameters.size'"},
      {MediaKind::kImage, ImageBody("x", R"({"size":"100*1024"})"), "'parameters.size'"},
      {MediaKind::kImage, ImageBody("x", R"({"size":"4096*1024"})"), "'parameters.size'"},
      {MediaKind::kImage, ImageBody("x", R"({"n":0})"), "'parameters.n'"},
      {MediaKind::kImage, ImageBody("x", R"({"n":5})"), "'parameters.n'"},
      {MediaKind::kImage, ImageBody("x", R"({"n":"2"})"), "'parameters.n'"},
      {MediaKind::kImage, ImageBody("x", R"({"seed":-1})"), "'parameters.seed'"},
      {MediaKind::kVideo, VideoBody("x", R"({"duration":0})"), "'parameters.duration'"},
      {MediaKind::kVideo, VideoBody("x", R"({"duration":16})"), "'parameters.duration'"},
      {MediaKind::kVideo, VideoBody("x", R"({"duration":2.5})"), "'parameters.duration'"},
      {MediaKind::kVideo, VideoBody("x", R"({"resolution":"4K"})"), "'parameters.resolution'"},
      {MediaKind::kVideo, VideoBody("x", R"({"resolution":720})"), "'parameters.resolution'"},
      {MediaKind::kVideo, VideoBody("x", R"({"size":"1280x720"})"), "'parameters.size'"},
  };
  for (const Case& c : cases) {
    const json::object error = Reject(c.kind, c.body);
    EXPECT_EQ(error.at("code").as_string(), "InvalidParameter") << c.body;
    EXPECT_NE(std::string(error.at("message").as_string()).find(c.param), std::string::npos)
        << c.body << " → " << error.at("message").as_string();
  }
}

TEST_F(DashScopeTest, StatusMarkerAnswersTheSubmission) {
  const json::object throttled = Reject(MediaKind::kImage, ImageBody("x [mock:status=429]"), 429);
  EXPECT_EQ(throttled.at("code").as_string(), "Throttling");
  const json::object internal = Reject(MediaKind::kVideo, VideoBody("x [mock:status=500]"), 500);
  EXPECT_EQ(internal.at("code").as_string(), "InternalError");
}

TEST_F(DashScopeTest, ResultFilesAreServedOnceSucceeded) {
  const std::string image = Submit(MediaKind::kImage, ImageBody("x [mock:images=1]"));
  const std::string path = "/mock/dashscope/files/" + image + "/0.png";
  EXPECT_FALSE(tasks_.File(path, kStart + milliseconds(500)));  // still running
  const std::optional<DashScopeAnswer> png = tasks_.File(path, kStart + milliseconds(1000));
  ASSERT_TRUE(png);
  EXPECT_EQ(png->content_type, "image/png");
  const std::optional<ImageSize> size = SniffImageSize(png->body);
  ASSERT_TRUE(size);
  EXPECT_EQ(size->width, 8);
  EXPECT_EQ(size->height, 8);
  EXPECT_EQ(tasks_.File(path, kStart + milliseconds(2000))->body, png->body);  // deterministic
  EXPECT_FALSE(
      tasks_.File("/mock/dashscope/files/" + image + "/1.png", kStart + milliseconds(1000)));
  EXPECT_FALSE(
      tasks_.File("/mock/dashscope/files/" + image + "/video.mp4", kStart + milliseconds(1000)));

  const std::string video = Submit(MediaKind::kVideo, VideoBody("x"));
  const std::optional<DashScopeAnswer> mp4 =
      tasks_.File("/mock/dashscope/files/" + video + "/video.mp4", kStart + milliseconds(1000));
  ASSERT_TRUE(mp4);
  EXPECT_EQ(mp4->content_type, "video/mp4");
  EXPECT_EQ(mp4->body.substr(4, 8), "ftypisom");
  EXPECT_FALSE(tasks_.File("/mock/dashscope/files/unknown/video.mp4", kStart));
}

TEST(DashScopeMarkersTest, ParsesEachMarker) {
  const MediaMarkers markers =
      ParseMediaMarkers("a cat [mock:task-ms=250] [mock:fail] [mock:images=2] [mock:status=503]");
  EXPECT_EQ(markers.task_ms, 250);
  EXPECT_TRUE(markers.fail);
  EXPECT_EQ(markers.images, 2);
  EXPECT_EQ(markers.status, 503);
  const MediaMarkers none = ParseMediaMarkers("a cat [mock:task-ms=x] [mock:failed]");
  EXPECT_FALSE(none.task_ms);
  EXPECT_FALSE(none.fail);
  EXPECT_FALSE(none.images);
  EXPECT_EQ(none.status, 0);
}

}  // namespace
}  // namespace nexusflow::mock
