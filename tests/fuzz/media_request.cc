// A hostile media request body (/v1/tasks, /v1/images/generations): parsed and validated
// for an image and a video model; what is accepted becomes the DashScope submission the
// connector would send.
#include <boost/json.hpp>

#include "gateway/protocols/media.h"
#include "services/provider-connector/dashscope_task.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace nexusflow;
  namespace media = gateway::media;
  const std::string_view text = fuzz::AsText(data, size);
  boost::json::object fields;
  std::string model;
  HttpError error;
  if (media::ParseBody(text, &fields, &model, &error)) {
    for (std::string_view kind : {"image", "video"}) {
      media::MediaRequest request;
      if (!media::ValidateParams(kind, fields, &request, &error)) continue;
      if (request.images < 0 || request.video_seconds < 0) std::abort();
      auto body = connector::BuildDashScopeSubmit(
          kind == "video" ? connector::MediaKind::kVideo : connector::MediaKind::kImage, model,
          boost::json::serialize(request.params));
      if (!body.ok()) std::abort();  // validated parameters always make a submission
    }
  }
  media::MediaRequest images;
  bool b64 = false;
  if (media::ParseImagesRequest(text, &images, &b64, &error) && (images.images < 1 || images.images > media::kMaxImages))
    std::abort();
  return 0;
}
