#include "worker/checkpoint/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>

namespace shoal::checkpoint {

namespace {

using json = nlohmann::json;

Status Corrupt(const std::string& path, const std::string& detail) {
  return DataLossError(path + ": " + detail +
                       " (not a valid safetensors file: it is truncated or corrupt; copy it again or use another "
                       "checkpoint)");
}

std::string Quote(std::string_view name) { return "tensor '" + std::string(name) + "'"; }

Result<SafetensorsEntry> ParseEntry(const std::string& path, const std::string& name, const json& v) {
  const std::string where = Quote(name);
  if (!v.is_object()) return Corrupt(path, where + ": header entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!v.contains(key)) return Corrupt(path, where + ": header entry has no \"" + key + "\"");
  }
  SafetensorsEntry e;
  const json& dt = v["dtype"];
  if (!dt.is_string()) return Corrupt(path, where + ": \"dtype\" is not a string");
  auto dtype = DTypeFromName(dt.get<std::string>());
  if (!dtype) {
    return UnimplementedError(path + ": " + where + " has dtype " + dt.get<std::string>() +
                              ", which shoal does not read (supported: F32, F16, BF16, F8_E4M3, I32, I64, U8); "
                              "convert the file to one of these");
  }
  e.dtype = *dtype;
  const json& shape = v["shape"];
  if (!shape.is_array()) return Corrupt(path, where + ": \"shape\" is not an array");
  for (const json& d : shape) {
    if (!d.is_number_unsigned()) return Corrupt(path, where + ": \"shape\" " + shape.dump() + " is not a list of sizes");
    const uint64_t u = d.get<uint64_t>();
    if (u > static_cast<uint64_t>(INT64_MAX)) return Corrupt(path, where + ": shape extent " + d.dump() + " too large");
    e.shape.push_back(static_cast<int64_t>(u));
  }
  const json& off = v["data_offsets"];
  if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned()) {
    return Corrupt(path, where + ": \"data_offsets\" " + off.dump() + " is not [begin, end]");
  }
  e.begin = off[0].get<uint64_t>();
  e.end = off[1].get<uint64_t>();
  if (e.end < e.begin) return Corrupt(path, where + ": data_offsets " + off.dump() + " end before begin");
  const auto numel = NumElements(e.shape);
  if (!numel || static_cast<unsigned __int128>(*numel) * static_cast<uint64_t>(DTypeSize(e.dtype)) !=
                    static_cast<unsigned __int128>(e.end - e.begin)) {
    return Corrupt(path, where + ": " + std::string(DTypeName(e.dtype)) + " " + ShapeString(e.shape) + " needs " +
                             (numel ? std::to_string(*numel * DTypeSize(e.dtype)) : std::string("too many")) +
                             " bytes but data_offsets " + off.dump() + " span " + std::to_string(e.end - e.begin));
  }
  return e;
}

// Larger elements first (natural alignment inside the 8-aligned data section), then by name.
std::vector<std::string> DataOrder(const TensorRefMap& tensors) {
  std::vector<std::string> order;
  order.reserve(tensors.size());
  for (const auto& [name, _] : tensors) order.push_back(name);
  std::stable_sort(order.begin(), order.end(), [&](const std::string& a, const std::string& b) {
    return DTypeSize(tensors.find(a)->second.dtype) > DTypeSize(tensors.find(b)->second.dtype);
  });
  return order;
}

Status ValidateForWrite(const std::string& path, const TensorRefMap& tensors,
                        const std::map<std::string, std::string>& metadata) {
  for (const auto& [name, t] : tensors) {
    if (name.empty() || name == "__metadata__") {
      return InvalidArgumentError(path + ": tensor name \"" + name + "\" is reserved or empty; rename the tensor");
    }
    if (!NumElements(t.shape)) {
      return InvalidArgumentError(path + ": " + Quote(name) + " has an invalid shape " + ShapeString(t.shape));
    }
    if (t.data == nullptr && t.nbytes() > 0) {
      return InvalidArgumentError(path + ": " + Quote(name) + " has no data (null pointer)");
    }
  }
  if (auto it = metadata.find("format"); it != metadata.end() && it->second != "pt") {
    return InvalidArgumentError(path + ": metadata \"format\" must be \"pt\" (transformers rejects \"" + it->second +
                                "\"); drop that key");
  }
  return Status::OK();
}

}  // namespace

std::string SafetensorsHeader(const TensorRefMap& tensors, const std::map<std::string, std::string>& metadata,
                              std::vector<std::string>* data_order) {
  std::vector<std::string> order = DataOrder(tensors);
  json header = json::object();
  json meta = json::object();
  for (const auto& [k, v] : metadata) meta[k] = v;
  meta["format"] = "pt";
  header["__metadata__"] = std::move(meta);
  uint64_t offset = 0;
  for (const std::string& name : order) {
    const TensorRef& t = tensors.find(name)->second;
    const uint64_t n = static_cast<uint64_t>(t.nbytes());
    header[name] = {{"dtype", std::string(DTypeName(t.dtype))}, {"shape", t.shape}, {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  out += text;
  if (data_order) *data_order = std::move(order);
  return out;
}

Result<FileDigest> WriteSafetensors(const std::string& path, const TensorRefMap& tensors,
                                    const SafetensorsWriteOptions& options) {
  RETURN_IF_ERROR(ValidateForWrite(path, tensors, options.metadata));
  std::vector<std::string> order;
  const std::string header = SafetensorsHeader(tensors, options.metadata, &order);
  ASSIGN_OR_RETURN(auto writer, AtomicFileWriter::Create(path, options.sync));
  RETURN_IF_ERROR(writer->Append(header));
  for (const std::string& name : order) {
    const TensorRef& t = tensors.find(name)->second;
    RETURN_IF_ERROR(writer->Append(t.data, static_cast<size_t>(t.nbytes())));
  }
  return writer->Commit();
}

Result<FileDigest> WriteSafetensors(const std::string& path, const TensorSet& tensors,
                                    const SafetensorsWriteOptions& options) {
  return WriteSafetensors(path, RefsOf(tensors), options);
}

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  return FromMapping(std::move(file));
}

Result<SafetensorsFile> SafetensorsFile::FromMapping(std::shared_ptr<const MappedFile> file) {
  const std::string& path = file->path();
  const uint64_t size = file->size();
  if (size < 8) return Corrupt(path, "file has " + std::to_string(size) + " bytes, less than the 8-byte header length");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | file->data()[i];
  if (n > kMaxSafetensorsHeaderBytes) {
    return Corrupt(path, "header length " + std::to_string(n) + " exceeds the " +
                             std::to_string(kMaxSafetensorsHeaderBytes) + "-byte limit");
  }
  if (n < 2 || n > size - 8) {
    return Corrupt(path, "header length " + std::to_string(n) + " does not fit a " + std::to_string(size) +
                             "-byte file");
  }
  const char* text = reinterpret_cast<const char*>(file->data() + 8);
  if (text[0] != '{') return Corrupt(path, "header does not start with '{'");
  json header = json::parse(text, text + n, nullptr, /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) return Corrupt(path, "header is not a valid JSON object");

  SafetensorsFile out;
  out.file_ = file;
  out.data_start_ = 8 + n;
  const uint64_t data_size = size - out.data_start_;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_null()) continue;
      if (!it->is_object()) return Corrupt(path, "\"__metadata__\" is not an object");
      for (auto m = it->begin(); m != it->end(); ++m) {
        if (!m->is_string()) return Corrupt(path, "\"__metadata__\" value of \"" + m.key() + "\" is not a string");
        out.metadata_[m.key()] = m->get<std::string>();
      }
      continue;
    }
    ASSIGN_OR_RETURN(SafetensorsEntry e, ParseEntry(path, it.key(), *it));
    if (e.end > data_size) {
      return Corrupt(path, Quote(it.key()) + ": data_offsets [" + std::to_string(e.begin) + ", " +
                               std::to_string(e.end) + "] run past the " + std::to_string(data_size) +
                               "-byte data section");
    }
    out.entries_.emplace(it.key(), std::move(e));
  }

  // The data section must be covered exactly: no overlap, no gap, nothing after the last tensor.
  std::vector<std::pair<const std::string*, const SafetensorsEntry*>> by_offset;
  for (const auto& [name, e] : out.entries_) by_offset.emplace_back(&name, &e);
  std::sort(by_offset.begin(), by_offset.end(), [](const auto& a, const auto& b) {
    return a.second->begin != b.second->begin ? a.second->begin < b.second->begin : a.second->end < b.second->end;
  });
  uint64_t cursor = 0;
  const std::string* prev = nullptr;
  for (const auto& [name, e] : by_offset) {
    if (e->begin < cursor) {
      return Corrupt(path, Quote(*name) + " [" + std::to_string(e->begin) + ", " + std::to_string(e->end) +
                               ") overlaps " + Quote(*prev) + " (which ends at " + std::to_string(cursor) + ")");
    }
    if (e->begin > cursor) {
      return Corrupt(path, "bytes [" + std::to_string(cursor) + ", " + std::to_string(e->begin) +
                               ") of the data section belong to no tensor (gap before " + Quote(*name) + ")");
    }
    cursor = e->end;
    prev = name;
  }
  if (cursor != data_size) {
    return Corrupt(path, "data section has " + std::to_string(data_size) + " bytes but the tensors cover " +
                             std::to_string(cursor));
  }
  return out;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(entries_.size());
  for (const auto& [name, _] : entries_) out.push_back(name);
  return out;
}

Result<TensorRef> SafetensorsFile::Get(std::string_view name) const {
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    return NotFoundError(path() + ": no " + Quote(name) + " (the file has " + std::to_string(entries_.size()) +
                         " tensors)");
  }
  const SafetensorsEntry& e = it->second;
  return TensorRef{e.dtype, e.shape, file_->data() + data_start_ + e.begin};
}

Result<Tensor> SafetensorsFile::Read(std::string_view name) const {
  ASSIGN_OR_RETURN(TensorRef ref, Get(name));
  return Tensor::Copy(ref);
}

Result<std::vector<float>> SafetensorsFile::ReadF32(std::string_view name) const {
  ASSIGN_OR_RETURN(TensorRef ref, Get(name));
  if (ref.dtype == DType::kF8E4M3) {
    const std::string scale_name = std::string(name) + "_scale_inv";
    if (Contains(scale_name)) {
      ASSIGN_OR_RETURN(TensorRef scale, Get(scale_name));
      auto r = DequantizeFp8(ref, scale, path() + ": " + std::string(name));
      if (!r.ok()) return DataLossError(r.status().message());
      return r;
    }
  }
  return ToF32(ref);
}

Result<TensorSet> SafetensorsFile::ReadAll() const {
  TensorSet out;
  for (const auto& [name, e] : entries_) {
    ASSIGN_OR_RETURN(Tensor t, Read(name));
    out.emplace(name, std::move(t));
  }
  return out;
}

}  // namespace shoal::checkpoint
