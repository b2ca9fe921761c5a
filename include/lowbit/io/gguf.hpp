// gguf.hpp: GGUF I/O: the reader (GgufFile), the v3 writer (GgufWriter, write_gguf,
// serialize_gguf), metadata values and llama.cpp's file types.
#pragma once

#include <lowbit/io/file_type.hpp>
#include <lowbit/io/gguf_format.hpp>
#include <lowbit/io/gguf_reader.hpp>
#include <lowbit/io/gguf_writer.hpp>
#include <lowbit/io/mapped_file.hpp>
#include <lowbit/io/output_file.hpp>
#include <lowbit/io/value.hpp>
