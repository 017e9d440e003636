#include "services/billing-ledger/pricing.h"

#include <algorithm>

namespace nexusflow::billing {
namespace {

int64_t CeilPerMillion(__int128 numerator) {
  if (numerator <= 0) return 0;
  __int128 cost = (numerator + 999'999) / 1'000'000;
  return cost > INT64_MAX ? INT64_MAX : static_cast<int64_t>(cost);
}

// Media units in the same millionths of a nano-USD as the token terms, so that a cost keeps
// one round-up however its parts mix.
__int128 MediaMillionths(int64_t images, int64_t video_seconds, const llm::v1::Price& p) {
  return (static_cast<__int128>(std::max<int64_t>(images, 0)) * p.image_nano_usd() +
          static_cast<__int128>(std::max<int64_t>(video_seconds, 0)) * p.video_second_nano_usd()) *
         1'000'000;
}

}  // namespace

int64_t CostNanoUsd(const llm::v1::Usage& u, const llm::v1::Price& p) {
  // 1-hour cache writes are a part of the cache writes, at their own price when set.
  int64_t write_1h = std::clamp<int64_t>(u.cache_write_1h_tokens(), 0, u.cache_write_tokens());
  int64_t price_1h = p.cache_write_1h_nano_usd_per_mtok() > 0 ? p.cache_write_1h_nano_usd_per_mtok()
                                                              : p.cache_write_nano_usd_per_mtok();
  __int128 sum = static_cast<__int128>(u.input_tokens()) * p.input_nano_usd_per_mtok() +
                 static_cast<__int128>(u.cache_read_tokens()) * p.cache_read_nano_usd_per_mtok() +
                 static_cast<__int128>(u.cache_write_tokens() - write_1h) * p.cache_write_nano_usd_per_mtok() +
                 static_cast<__int128>(write_1h) * price_1h +
                 static_cast<__int128>(u.output_tokens()) * p.output_nano_usd_per_mtok() +
                 MediaMillionths(u.images(), u.video_seconds(), p);
  return CeilPerMillion(sum);
}

int64_t MaxMediaCostNanoUsd(int64_t images, int64_t video_seconds, const llm::v1::Price& price) {
  return CeilPerMillion(MediaMillionths(images, video_seconds, price));
}

int64_t MaxCostNanoUsd(int64_t prompt_tokens, int64_t max_output_tokens,
                       const llm::v1::Price& p) {
  int64_t input_price = std::max({p.input_nano_usd_per_mtok(), p.cache_write_nano_usd_per_mtok(),
                                  p.cache_write_1h_nano_usd_per_mtok()});
  __int128 sum = static_cast<__int128>(prompt_tokens) * input_price +
                 static_cast<__int128>(max_output_tokens) * p.output_nano_usd_per_mtok();
  return CeilPerMillion(sum);
}

}  // namespace nexusflow::billing
