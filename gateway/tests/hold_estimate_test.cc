#include <gtest/gtest.h>

#include <string>

#include "gateway/hold_estimate.h"
#include "libs/common/image_size.h"

namespace nexusflow::gateway {
namespace {

std::string Png(uint32_t w, uint32_t h) {
  std::string b("\x89PNG\r\n\x1a\n\0\0\0\rIHDR", 16);
  for (uint32_t v : {w, h})
    for (int shift = 24; shift >= 0; shift -= 8) b.push_back(static_cast<char>((v >> shift) & 0xFF));
  b.append("\x08\x02\0\0\0", 5);
  return b;
}

std::string Base64(std::string_view bytes) {
  static const char* abc = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    uint32_t v = (uint8_t(bytes[i]) << 16) | (uint8_t(bytes[i + 1]) << 8) | uint8_t(bytes[i + 2]);
    for (int s = 18; s >= 0; s -= 6) out.push_back(abc[(v >> s) & 63]);
  }
  if (i < bytes.size()) {
    uint32_t v = uint8_t(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= uint8_t(bytes[i + 1]) << 8;
    out.push_back(abc[(v >> 18) & 63]);
    out.push_back(abc[(v >> 12) & 63]);
    out.push_back(i + 1 < bytes.size() ? abc[(v >> 6) & 63] : '=');
    out.push_back('=');
  }
  return out;
}

TEST(ImageSizeTest, HeadersOfEachFormat) {
  auto png = SniffImageSize(Png(1024, 768));
  ASSERT_TRUE(png);
  EXPECT_EQ(png->width, 1024);
  EXPECT_EQ(png->height, 768);
  auto gif = SniffImageSize(std::string("GIF89a\x40\x01\xF0\x00", 10));
  ASSERT_TRUE(gif);
  EXPECT_EQ(gif->width, 320);
  EXPECT_EQ(gif->height, 240);
  // JPEG: SOI, an APP0 segment to skip, then SOF0 with height 600, width 800.
  std::string jpeg("\xFF\xD8\xFF\xE0\x00\x04\x00\x00\xFF\xC0\x00\x11\x08\x02\x58\x03\x20", 17);
  auto j = SniffImageSize(jpeg);
  ASSERT_TRUE(j);
  EXPECT_EQ(j->width, 800);
  EXPECT_EQ(j->height, 600);
  std::string webp("RIFF\0\0\0\0WEBPVP8X\x0a\0\0\0\0\0\0\0\x7f\x07\0\x37\x04\0", 30);  // 1920 x 1080
  auto w = SniffImageSize(webp);
  ASSERT_TRUE(w);
  EXPECT_EQ(w->width, 1920);
  EXPECT_EQ(w->height, 1080);
  EXPECT_FALSE(SniffImageSize("not an image"));
  EXPECT_FALSE(SniffImageSize(Png(1, 1).substr(0, 20)));  // cut short
  EXPECT_FALSE(SniffImageSize(std::string("\xFF\xD8\xFF\xE0\x00\x40", 6)));  // segment runs past the end
  auto url = SniffDataUrlImageSize("data:image/png;base64," + Base64(Png(4000, 3000)));
  ASSERT_TRUE(url);
  EXPECT_EQ(url->width, 4000);
  EXPECT_FALSE(SniffDataUrlImageSize("https://example.com/cat.png"));
}

TEST(HoldEstimateTest, ImagesCountTheLargestProviderFigure) {
  EXPECT_EQ(ImageTokenBound(256, 256), 258);     // Gemini's one tile beats OpenAI's 255
  EXPECT_EQ(ImageTokenBound(1024, 1024), 1399);  // Anthropic: 1024*1024/750
  EXPECT_EQ(ImageTokenBound(2048, 768), 1445);   // OpenAI: 4 x 2 tiles; Anthropic 1,230
  EXPECT_EQ(ImageTokenBound(1536, 1536), 1600);  // Anthropic at its cap; Gemini 4 tiles, 1,032
  EXPECT_EQ(ImageTokenBound(8000, 8000), 258 * 11 * 11);  // Gemini's tiles grow with size
  EXPECT_EQ(ImageTokenBound(0, 10), kUnknownMediaTokens);
}

TEST(HoldEstimateTest, TextIsBytesSoCjkIsCovered) {
  llm::v1::ChatRequest r;
  auto* m = r.add_messages();
  m->set_role(llm::v1::ROLE_USER);
  std::string cjk;
  for (int i = 0; i < 1000; ++i) cjk += "\xE4\xBD\xA0";  // 1,000 characters, 3 bytes each
  m->add_parts()->set_text(cjk);
  // One token per byte: 3,000, at least the 1,000+ tokens any tokenizer gives these.
  EXPECT_EQ(PromptTokenBound(r, 0), 3000 + kMessageFramingTokens);
  EXPECT_EQ(PromptTokenBound(r, 2000), 2000);  // never more than the context holds
}

TEST(HoldEstimateTest, ImagesToolsResultsAndDocumentsAllCount) {
  llm::v1::ChatRequest r;
  auto* m = r.add_messages();
  m->set_role(llm::v1::ROLE_USER);
  auto* inline_image = m->add_parts()->mutable_image()->mutable_inline_data();
  inline_image->set_mime_type("image/png");
  inline_image->set_data(Png(1024, 1024));
  m->add_parts()->mutable_image()->set_url("https://example.com/unknown.png");
  auto* result = m->add_parts()->mutable_tool_result();
  result->set_content("ignored when parts are given");
  result->add_parts()->set_text("0123456789");
  m->add_parts()->mutable_document()->set_url("https://example.com/a.pdf");
  auto* tool = r.add_tools();
  tool->set_name("f");
  tool->set_parameters_json("{}");
  int64_t expected = kMessageFramingTokens + 1399 + kUnknownMediaTokens + 10 + 100000 +
                     kMessageFramingTokens + 1 + 2;
  EXPECT_EQ(PromptTokenBound(r, 100000), std::min<int64_t>(expected, 100000));
  EXPECT_EQ(PromptTokenBound(r, 0), expected - 100000 + kUnknownMediaTokens);
}

TEST(HoldEstimateTest, OutputAddsTheThinkingBudget) {
  llm::v1::ChatRequest r;
  EXPECT_EQ(OutputTokenBound(r, 1024), 1024);
  r.mutable_thinking()->set_enabled(true);
  r.mutable_thinking()->set_budget_tokens(4096);
  EXPECT_EQ(OutputTokenBound(r, 1024), 5120);
}

}  // namespace
}  // namespace nexusflow::gateway
