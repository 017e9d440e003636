#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "gateway/protocols/openai_embeddings.h"

namespace nexusflow::gateway::openai {
namespace {

TEST(EmbeddingsParseTest, EveryInputShape) {
  ParsedEmbeddings p;
  HttpError e;
  ASSERT_TRUE(ParseEmbeddingsRequest(R"({"model":"m","input":"hi","encoding_format":"base64","dimensions":8,"user":"u"})", &p, &e));
  EXPECT_TRUE(p.base64);
  EXPECT_EQ(p.request.inputs(0).text(), "hi");
  EXPECT_EQ(p.request.dimensions(), 8);
  ParsedEmbeddings q;
  ASSERT_TRUE(ParseEmbeddingsRequest(R"({"model":"m","input":[[1,2],[3]]})", &q, &e));
  EXPECT_FALSE(q.base64);
  ASSERT_EQ(q.request.inputs_size(), 2);
  EXPECT_EQ(q.request.inputs(0).tokens().ids_size(), 2);
  ParsedEmbeddings r;
  ASSERT_TRUE(ParseEmbeddingsRequest(R"({"model":"m","input":[5,6,7]})", &r, &e));
  EXPECT_EQ(r.request.inputs_size(), 1);
  EXPECT_EQ(EmbeddingTokenBound(r.request), 3);
}

TEST(EmbeddingsParseTest, BadInputNamesTheParameter) {
  for (auto [body, param] : std::vector<std::pair<std::string, std::string>>{
           {R"({"input":"x"})", "model"},
           {R"({"model":"m"})", "input"},
           {R"({"model":"m","input":""})", "input"},
           {R"({"model":"m","input":[]})", "input"},
           {R"({"model":"m","input":[[]]})", "input"},
           {R"({"model":"m","input":[-1]})", "input"},
           {R"({"model":"m","input":[1.5]})", "input"},
           {R"({"model":"m","input":["a",1]})", "input"},
           {R"({"model":"m","input":{"a":1}})", "input"},
           {R"({"model":"m","input":"x","encoding_format":"int8"})", "encoding_format"},
           {R"({"model":"m","input":"x","dimensions":0})", "dimensions"},
           {R"({"model":"m","input":"x","dimensions":"8"})", "dimensions"},
           {R"({"model":"m","input":"x","user":5})", "user"},
       }) {
    ParsedEmbeddings p;
    HttpError e;
    EXPECT_FALSE(ParseEmbeddingsRequest(body, &p, &e)) << body;
    EXPECT_EQ(e.status, 400) << body;
    EXPECT_EQ(e.param, param) << body;
  }
  std::string many = R"({"model":"m","input":[)";
  for (int i = 0; i <= kMaxEmbeddingInputs; ++i) many += i ? ",\"x\"" : "\"x\"";
  many += "]}";
  ParsedEmbeddings p;
  HttpError e;
  EXPECT_FALSE(ParseEmbeddingsRequest(many, &p, &e));
  EXPECT_EQ(e.param, "input");
}

TEST(EmbeddingsRenderTest, FloatAndBase64CarryTheSameFloats) {
  llm::v1::EmbedResponse r;
  auto* e = r.add_embeddings();
  e->add_values(0.5f);
  e->add_values(-0.1f);
  r.mutable_usage()->set_input_tokens(3);
  EXPECT_EQ(EmbeddingsBody(r, "m", false),
            R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.5,-0.1]}],)"
            R"("model":"m","usage":{"prompt_tokens":3,"total_tokens":3}})");
  auto b64 = boost::json::parse(EmbeddingsBody(r, "m", true));
  // 0.5f = 00 00 00 3f, -0.1f = cd cc cc bd (little-endian).
  EXPECT_EQ(b64.at("data").at(0).at("embedding").as_string(), "AAAAP83MzL0=");
}

}  // namespace
}  // namespace nexusflow::gateway::openai
