#pragma once
// What each public protocol implements to answer a chat request: a whole body, or the
// stream frames for each canonical event.
#include <string>
#include <string_view>

#include "gateway/chat_answer.h"
#include "libs/common/status_map.h"

namespace nexusflow::gateway {

class ChatRenderer {
 public:
  virtual ~ChatRenderer() = default;
  virtual ApiProtocol protocol() const = 0;
  // The non-streamed response body.
  virtual std::string SyncBody(const ChatAnswer& answer) = 0;
  // Frames for one event of a stream ("" when the event shows nothing).
  virtual std::string StreamEvent(const llm::v1::ChatEvent& event) = 0;
  // Frames reporting a failure after the stream began.
  virtual std::string StreamError(const HttpError& error) = 0;
  // Frames closing a stream that ended well.
  virtual std::string StreamEnd() = 0;
};

}  // namespace nexusflow::gateway
