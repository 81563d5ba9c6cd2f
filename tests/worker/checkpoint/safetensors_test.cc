// safetensors reader/writer: the dsv3-micro fixture, round trips of every dtype, deterministic output, the
// f32 accessors, and every kind of corrupt file reported as DataLoss naming the file and tensor.
#include "worker/checkpoint/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "kernels/dtype.h"
#include "kernels/fp8.h"
#include "tests/worker/checkpoint/test_util.h"

namespace shoal::checkpoint {
namespace {

using testing_util::ReadBytes;
using testing_util::TempDir;
using testing_util::WriteBytes;
using ::testing::HasSubstr;

template <typename T>
Tensor Typed(DType dtype, std::vector<int64_t> shape, std::vector<T> values) {
  Tensor t = Tensor::Zeros(dtype, std::move(shape));
  EXPECT_EQ(static_cast<int64_t>(values.size() * sizeof(T)), t.nbytes());
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  return t;
}

TEST(SafetensorsFixtureTest, ReadsDsv3MicroModel) {
  if (!testing_util::HaveFixture()) GTEST_SKIP() << "dsv3-micro fixture not found";
  auto file = SafetensorsFile::Open(testing_util::FixtureDir() + "/model.safetensors");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->entries().size(), 171u);
  EXPECT_EQ(file->metadata().at("format"), "pt");
  for (const auto& [name, e] : file->entries()) EXPECT_EQ(e.dtype, DType::kF32) << name;

  const std::pair<const char*, std::vector<int64_t>> shapes[] = {
      {"lm_head.weight", {320, 64}},
      {"model.embed_tokens.weight", {320, 64}},
      {"model.layers.0.mlp.down_proj.weight", {64, 160}},
      {"model.layers.1.self_attn.q_b_proj.weight", {48, 48}},
      {"model.layers.1.self_attn.kv_b_proj.weight", {88, 24}},
      {"model.layers.2.self_attn.o_proj.weight", {64, 56}},
      {"model.layers.2.mlp.gate.e_score_correction_bias", {12}},
      {"model.layers.2.mlp.experts.11.down_proj.weight", {64, 20}},
      {"model.layers.3.eh_proj.weight", {64, 128}},
  };
  for (const auto& [name, shape] : shapes) {
    auto ref = file->Get(name);
    ASSERT_TRUE(ref.ok()) << ref.status();
    EXPECT_EQ(ref->shape, shape) << name;
  }
  // Real values: the MTP copies are bit-identical to the shared tensors; norm weights are 1 + 0.1·N(0,1).
  EXPECT_EQ(file->Read("model.layers.3.embed_tokens.weight")->bytes, file->Read("model.embed_tokens.weight")->bytes);
  EXPECT_EQ(file->Read("model.layers.3.shared_head.head.weight")->bytes, file->Read("lm_head.weight")->bytes);
  auto norm = file->ReadF32("model.norm.weight");
  ASSERT_TRUE(norm.ok());
  double mean = 0;
  for (float v : *norm) mean += v / norm->size();
  EXPECT_NEAR(mean, 1.0, 0.05);
  EXPECT_FALSE(file->Get("model.layers.4.input_layernorm.weight").ok());
  EXPECT_EQ(file->Get("nope").status().code(), StatusCode::kNotFound);
}

TEST(SafetensorsTest, RoundTripsEveryDtypeWithAlignedData) {
  TempDir dir;
  TensorSet in;
  in["a.f32"] = Tensor::FromF32({2, 3}, std::vector<float>{1, -2, 3.5f, 0, 1e-30f, -7});
  in["b.bf16"] = Typed<uint16_t>(DType::kBF16, {3}, {0x3f80, 0xc000, 0x0001});
  in["c.f16"] = Typed<uint16_t>(DType::kF16, {1}, {0x3c00});
  in["d.f8"] = Typed<uint8_t>(DType::kF8E4M3, {5}, {0x00, 0x38, 0x7e, 0xfe, 0x01});
  in["e.i32"] = Typed<int32_t>(DType::kI32, {2}, {-1, 123456789});
  in["f.i64"] = Tensor::ScalarI64(int64_t{1} << 40);
  in["g.u8"] = Typed<uint8_t>(DType::kU8, {1, 3}, {0, 128, 255});
  in["h.empty"] = Tensor::Zeros(DType::kF32, {0, 4});
  SafetensorsWriteOptions options;
  options.metadata["shoal_step"] = "7";
  const std::string path = dir.Sub("x.safetensors");
  auto digest = WriteSafetensors(path, in, options);
  ASSERT_TRUE(digest.ok()) << digest.status();

  const std::string bytes = ReadBytes(path);
  EXPECT_EQ(digest->bytes, bytes.size());
  EXPECT_EQ(digest->xxh3, Xxh3Of(bytes.data(), bytes.size()));
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);
  EXPECT_EQ(bytes[8], '{');
  auto header = nlohmann::json::parse(bytes.substr(8, header_len));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  EXPECT_EQ(header["__metadata__"]["shoal_step"], "7");

  auto file = SafetensorsFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status();
  auto out = file->ReadAll();
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out, in);
  EXPECT_EQ(file->metadata().at("shoal_step"), "7");
  for (const auto& [name, e] : file->entries()) {
    EXPECT_EQ(e.begin % DTypeSize(e.dtype), 0u) << name << " is not naturally aligned";
  }
  // No temporary file is left behind.
  EXPECT_EQ(testing_util::ListDir(dir.path()), std::vector<std::string>{"x.safetensors"});
}

TEST(SafetensorsTest, OutputIsDeterministic) {
  TempDir dir;
  TensorSet a;
  a["z"] = testing_util::RandomTensor({4, 4}, 1);
  a["m"] = Typed<uint16_t>(DType::kBF16, {3}, {1, 2, 3});
  a["a"] = Tensor::ScalarI64(5);
  ASSERT_TRUE(WriteSafetensors(dir.Sub("1.safetensors"), a).ok());
  TensorRefMap refs;  // same tensors, inserted in another order
  for (auto it = a.rbegin(); it != a.rend(); ++it) refs.emplace(it->first, it->second.ref());
  ASSERT_TRUE(WriteSafetensors(dir.Sub("2.safetensors"), refs).ok());
  EXPECT_EQ(ReadBytes(dir.Sub("1.safetensors")), ReadBytes(dir.Sub("2.safetensors")));
}

TEST(SafetensorsTest, ReadF32ConvertsBf16F16AndDequantisesFp8) {
  TempDir dir;
  TensorSet in;
  const std::vector<float> values = {1.f, -0.5f, 3.140625f, 1e-3f};
  Tensor bf = Tensor::Zeros(DType::kBF16, {4});
  Tensor hf = Tensor::Zeros(DType::kF16, {4});
  for (int i = 0; i < 4; ++i) {
    bf.mutable_values<uint16_t>()[i] = kernels::f32_to_bf16(values[i]);
    hf.mutable_values<uint16_t>()[i] = F32ToF16(values[i]);
  }
  in["bf"] = bf;
  in["hf"] = hf;
  // A 130×3 FP8 weight: two 128-row blocks with different scales.
  const std::vector<float> w = testing_util::RandomValues(130 * 3, 3, 1.f);
  Tensor q = Tensor::Zeros(DType::kF8E4M3, {130, 3});
  Tensor s = Tensor::Zeros(DType::kF32, {2, 1});
  kernels::quantize_fp8(q.bytes.data(), s.mutable_values<float>().data(), w.data(), 130, 3, kernels::kFp8Block128x128,
                        false);
  in["w.weight"] = q;
  in["w.weight_scale_inv"] = s;
  ASSERT_TRUE(WriteSafetensors(dir.Sub("c.safetensors"), in).ok());
  auto file = SafetensorsFile::Open(dir.Sub("c.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();

  auto got_bf = file->ReadF32("bf");
  ASSERT_TRUE(got_bf.ok());
  for (int i = 0; i < 4; ++i) EXPECT_EQ((*got_bf)[i], kernels::round_to_bf16(values[i]));
  auto got_hf = file->ReadF32("hf");
  ASSERT_TRUE(got_hf.ok());
  EXPECT_EQ((*got_hf)[0], 1.f);
  EXPECT_EQ((*got_hf)[2], 3.140625f);
  EXPECT_NEAR((*got_hf)[3], 1e-3f, 1e-6f);

  auto deq = file->ReadF32("w.weight");
  ASSERT_TRUE(deq.ok()) << deq.status();
  const float* scale = s.values<float>().data();
  for (int64_t r = 0; r < 130; ++r) {
    for (int64_t c = 0; c < 3; ++c) {
      const float x = w[r * 3 + c];
      const float sc = scale[r / 128];
      EXPECT_EQ((*deq)[r * 3 + c], kernels::e4m3_to_f32(q.bytes[r * 3 + c]) * sc);
      EXPECT_LE(std::fabs((*deq)[r * 3 + c] - x), std::fabs(x) / 16 + sc / 1024) << r << "," << c;
    }
  }
}

TEST(SafetensorsTest, F16ConversionsAreExact) {
  EXPECT_EQ(F32ToF16(1.f), 0x3c00);
  EXPECT_EQ(F32ToF16(-2.f), 0xc000);
  EXPECT_EQ(F32ToF16(65504.f), 0x7bff);
  EXPECT_EQ(F32ToF16(65520.f), 0x7c00);       // rounds to infinity
  EXPECT_EQ(F32ToF16(std::ldexp(1.f, -24)), 0x0001);  // smallest subnormal
  EXPECT_EQ(F32ToF16(std::ldexp(1.f, -14)), 0x0400);  // smallest normal
  EXPECT_EQ(F32ToF16(1.f + std::ldexp(1.f, -11)), 0x3c00);  // tie to even
  EXPECT_EQ(F32ToF16(1.f + 3 * std::ldexp(1.f, -11)), 0x3c02);
  for (uint32_t h = 0; h < 0x7c00; ++h) {  // every finite non-negative half round-trips
    ASSERT_EQ(F32ToF16(F16ToF32(static_cast<uint16_t>(h))), h);
    ASSERT_EQ(F32ToF16(F16ToF32(static_cast<uint16_t>(h | 0x8000))), h | 0x8000);
  }
  EXPECT_TRUE(std::isinf(F16ToF32(0x7c00)));
  EXPECT_TRUE(std::isnan(F16ToF32(0x7e00)));
}

// A file with a hand-written header and `data_bytes` zero bytes of data.
std::string Craft(const std::string& header_json, size_t data_bytes, bool pad = true) {
  std::string h = header_json;
  if (pad) h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = h.size();
  std::memcpy(out.data(), &n, 8);
  return out + h + std::string(data_bytes, '\0');
}

struct CorruptCase {
  const char* what;
  std::string bytes;
  StatusCode code;
  const char* mention;  // expected in the message besides the file path
};

TEST(SafetensorsTest, CorruptFilesAreDataLossNamingFileAndTensor) {
  TempDir dir;
  TensorSet good;
  good["a"] = testing_util::RandomTensor({4}, 1);
  good["b"] = testing_util::RandomTensor({2, 2}, 2);
  ASSERT_TRUE(WriteSafetensors(dir.Sub("good.safetensors"), good).ok());
  const std::string ok = ReadBytes(dir.Sub("good.safetensors"));

  std::string huge_len = ok;
  const uint64_t huge = uint64_t{1} << 40;
  std::memcpy(huge_len.data(), &huge, 8);
  std::string past_end = ok;
  const uint64_t past = ok.size();
  std::memcpy(past_end.data(), &past, 8);

  const std::vector<CorruptCase> cases = {
      {"truncated by one byte", ok.substr(0, ok.size() - 1), StatusCode::kDataLoss, "tensor '"},
      {"shorter than the length field", ok.substr(0, 5), StatusCode::kDataLoss, "8-byte header length"},
      {"header length beyond the limit", huge_len, StatusCode::kDataLoss, "exceeds"},
      {"header length beyond the file", past_end, StatusCode::kDataLoss, "does not fit"},
      {"trailing bytes", ok + std::string(8, '\0'), StatusCode::kDataLoss, "cover"},
      {"not JSON", Craft("{\"a\": {\"dtype\": \"F32\",", 16), StatusCode::kDataLoss, "JSON"},
      {"not an object", Craft("[1, 2]", 0), StatusCode::kDataLoss, "'{'"},
      {"end before begin", Craft(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
       StatusCode::kDataLoss, "tensor 'a'"},
      {"size does not match shape", Craft(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4),
       StatusCode::kDataLoss, "tensor 'a'"},
      {"offsets past the data", Craft(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4),
       StatusCode::kDataLoss, "tensor 'a'"},
      {"overlapping tensors",
       Craft(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
             8),
       StatusCode::kDataLoss, "overlaps"},
      {"gap between tensors",
       Craft(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
             12),
       StatusCode::kDataLoss, "gap before tensor 'b'"},
      {"negative extent", Craft(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4),
       StatusCode::kDataLoss, "tensor 'a'"},
      {"missing data_offsets", Craft(R"({"a":{"dtype":"F32","shape":[1]}})", 4), StatusCode::kDataLoss,
       "data_offsets"},
      {"non-string metadata", Craft(R"({"__metadata__":{"format":1}})", 0), StatusCode::kDataLoss, "__metadata__"},
      {"unsupported dtype", Craft(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", 8),
       StatusCode::kUnimplemented, "F64"},
  };
  for (const CorruptCase& c : cases) {
    const std::string path = dir.Sub("bad.safetensors");
    WriteBytes(path, c.bytes);
    auto file = SafetensorsFile::Open(path);
    ASSERT_FALSE(file.ok()) << c.what;
    EXPECT_EQ(file.status().code(), c.code) << c.what << ": " << file.status();
    EXPECT_THAT(file.status().message(), HasSubstr(path)) << c.what;
    EXPECT_THAT(file.status().message(), HasSubstr(c.mention)) << c.what << ": " << file.status();
  }
  // The good file still reads, and an empty data section with only metadata is valid.
  EXPECT_TRUE(SafetensorsFile::Open(dir.Sub("good.safetensors")).ok());
  WriteBytes(dir.Sub("empty.safetensors"), Craft(R"({"__metadata__":{"format":"pt"}})", 0));
  auto empty = SafetensorsFile::Open(dir.Sub("empty.safetensors"));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->entries().empty());
}

TEST(SafetensorsTest, WriterErrorsSayWhatToFix) {
  TempDir dir;
  TensorSet in;
  in["a"] = Tensor::FromF32({1}, std::vector<float>{1});
  auto missing_dir = WriteSafetensors(dir.Sub("no/such/dir/x.safetensors"), in);
  EXPECT_EQ(missing_dir.status().code(), StatusCode::kNotFound);
  EXPECT_THAT(missing_dir.status().message(), HasSubstr("no/such/dir"));

  TensorRefMap bad;
  bad["__metadata__"] = in["a"].ref();
  EXPECT_EQ(WriteSafetensors(dir.Sub("x.safetensors"), bad).status().code(), StatusCode::kInvalidArgument);
  TensorRefMap null_data;
  null_data["a"] = TensorRef{DType::kF32, {2}, nullptr};
  EXPECT_EQ(WriteSafetensors(dir.Sub("x.safetensors"), null_data).status().code(), StatusCode::kInvalidArgument);
  SafetensorsWriteOptions tf;
  tf.metadata["format"] = "tf";
  EXPECT_EQ(WriteSafetensors(dir.Sub("x.safetensors"), in, tf).status().code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(testing_util::ListDir(dir.path()).empty());
}

}  // namespace
}  // namespace shoal::checkpoint
