#include <gtest/gtest.h>

#include "services/provider-connector/embed.h"

namespace nexusflow::connector {
namespace {

TEST(EmbedBodyTest, TextsAndTokenArraysWithDimensions) {
  llm::v1::EmbedRequest r;
  r.add_inputs()->set_text("hello");
  auto* ids = r.add_inputs()->mutable_tokens();
  ids->add_ids(1);
  ids->add_ids(2);
  r.set_dimensions(256);
  r.set_user("u1");
  EXPECT_EQ(BuildOpenAiEmbedBody(r, "up"),
            R"({"model":"up","input":["hello",[1,2]],"encoding_format":"float","dimensions":256,"user":"u1"})");
}

TEST(EmbedResponseTest, VectorsInInputOrderWithUsage) {
  auto r = ParseOpenAiEmbedResponse(
      R"({"object":"list","data":[{"object":"embedding","index":1,"embedding":[0.5,-0.25]},)"
      R"({"object":"embedding","index":0,"embedding":[1,0]}],"model":"up-v4","usage":{"prompt_tokens":7,"total_tokens":7}})",
      2);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->embeddings_size(), 2);
  EXPECT_EQ(r->embeddings(0).values(0), 1.0f);
  EXPECT_EQ(r->embeddings(1).values(1), -0.25f);
  EXPECT_EQ(r->embeddings(1).index(), 1);
  EXPECT_EQ(r->upstream_model(), "up-v4");
  EXPECT_EQ(r->usage().input_tokens(), 7);
}

TEST(EmbedResponseTest, MissingDuplicateOrStrayVectorsAreErrors) {
  EXPECT_FALSE(ParseOpenAiEmbedResponse(R"({"data":[{"index":0,"embedding":[1]}]})", 2).ok());
  EXPECT_FALSE(ParseOpenAiEmbedResponse(R"({"data":[{"index":0,"embedding":[1]},{"index":0,"embedding":[1]}]})", 2).ok());
  EXPECT_FALSE(ParseOpenAiEmbedResponse(R"({"data":[{"index":5,"embedding":[1]}]})", 1).ok());
  EXPECT_FALSE(ParseOpenAiEmbedResponse(R"({"data":[{"index":0,"embedding":["x"]}]})", 1).ok());
  EXPECT_FALSE(ParseOpenAiEmbedResponse("not json", 1).ok());
}

}  // namespace
}  // namespace nexusflow::connector
