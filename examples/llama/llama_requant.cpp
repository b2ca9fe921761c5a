// llama_requant.cpp: writes a llama GGUF in a GGUF block format (plain rounding), types chosen as llama.cpp does.
#include "requantize.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <map>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  CLI::App app{"Rewrite a llama GGUF with its weights in a GGUF block format (formats' plain rounding)"};
  std::string model_path, out_path, type_name = "Q8_0";
  std::vector<std::string> overrides;
  app.add_option("--model", model_path, "llama GGUF to read")->required();
  app.add_option("--out", out_path, "GGUF to write")->required();
  app.add_option("--type", type_name, "type of the weights: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K ... Q6_K, IQ4_NL, "
                                      "IQ4_XS, F16, BF16, F32 (the head as llama.cpp chooses)");
  app.add_option("--tensor-type", overrides,
                 "<class or tensor name>=<type>, e.g. attn_q=Q4_K, ffn_down=F16, output=Q8_0 (exact, no fallback)");
  CLI11_PARSE(app, argc, argv);
  try {
    const auto parse = [](const std::string& name) {
      const auto t = lowbit::formats::parse_type(name);
      lowbit::detail::require(t.has_value(), "type: unknown type '{}'", name);
      return *t;
    };
    llama::RequantOptions o;
    o.type = parse(type_name);
    for (const auto& s : overrides) {
      const size_t eq = s.find('=');
      lowbit::detail::require(eq != std::string::npos && eq > 0, "--tensor-type: expected <class>=<type>, got '{}'", s);
      o.overrides[s.substr(0, eq)] = parse(s.substr(eq + 1));
    }
    const auto src = lowbit::io::GgufFile::open(model_path);
    const llama::RequantResult r = llama::requantize_model(src, out_path, o);
    std::map<std::string, int> count;
    for (const auto& [name, type] : r.types) ++count[lowbit::formats::to_string(type)];
    std::string types;
    for (const auto& [type, n] : count) types += fmt::format(" {} x{}", type, n);
    for (const auto& [name, type] : r.types)
      if (const auto& t = src.tensor(name); t.type != type)
        fmt::print("{:<28} {:>5} -> {:<5} {:>9} bytes\n", name, lowbit::formats::to_string(t.type),
                   lowbit::formats::to_string(type), lowbit::formats::row_bytes(type, t.ne[0]) * uint64_t(t.rows()));
    fmt::print("wrote {}: {} bytes ({} in tensors); tensors{}\n", out_path, r.file_bytes, r.tensor_bytes, types);
  } catch (const std::exception& e) {
    fmt::print(stderr, "llama_requant: {}\n", e.what());
    return 1;
  }
}
