#pragma once
// Prices and costs. Prices are nano-USD per million tokens, and for media per image and per
// second of video; a cost is the exact sum over the token kinds and media units, rounded up
// to the next nano-USD once per request.
#include <cstdint>

#include "nexusflow/llm/v1/chat.pb.h"

namespace nexusflow::billing {

int64_t CostNanoUsd(const llm::v1::Usage& usage, const llm::v1::Price& price);

// The most a request can cost: every prompt token uncached, the whole output limit used.
int64_t MaxCostNanoUsd(int64_t prompt_tokens, int64_t max_output_tokens,
                       const llm::v1::Price& price);

// The most a media task can cost: `images` images and `video_seconds` seconds of video.
int64_t MaxMediaCostNanoUsd(int64_t images, int64_t video_seconds, const llm::v1::Price& price);

}  // namespace nexusflow::billing
