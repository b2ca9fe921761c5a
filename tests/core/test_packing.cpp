// test_packing.cpp: bit packing layout and round trips for every width and odd lengths.
#include <lowbit/core/packing.hpp>

#include <catch2/catch.hpp>

#include <random>
#include <vector>

TEST_CASE("INT4 puts the even index in the low nibble, INT2 four codes a byte") {
  std::vector<uint8_t> out(2);
  const int32_t u4[] = {1, 2, 3};
  lowbit::pack_codes(u4, 3, 4, out.data());
  CHECK(out == std::vector<uint8_t>{0x21, 0x03});
  const int32_t s4[] = {-1, -8};
  lowbit::pack_codes(s4, 2, 4, out.data());
  CHECK(out[0] == 0x8F);
  const int32_t u2[] = {1, 2, 3, 0, 1};
  lowbit::pack_codes(u2, 5, 2, out.data());
  CHECK(out == std::vector<uint8_t>{0x39, 0x01});
  const int32_t s8[] = {-1, 127};
  lowbit::pack_codes(s8, 2, 8, out.data());
  CHECK(out == std::vector<uint8_t>{0xFF, 0x7F});
  // INT3 straddles bytes: 5 = 101b, 6 = 110b, 7 = 111b -> bits 101 110 111 (LSB first).
  const int32_t u3[] = {5, 6, 7};
  lowbit::pack_codes(u3, 3, 3, out.data());
  CHECK(out == std::vector<uint8_t>{0xF5, 0x01});
}

TEST_CASE("packed sizes are whole bytes per row") {
  CHECK(lowbit::packed_row_bytes(1, 4) == 1);
  CHECK(lowbit::packed_row_bytes(3, 4) == 2);
  CHECK(lowbit::packed_row_bytes(5, 2) == 2);
  CHECK(lowbit::packed_row_bytes(8, 3) == 3);
  CHECK(lowbit::packed_row_bytes(9, 3) == 4);
  CHECK(lowbit::packed_row_bytes(4096, 8) == 4096);
}

TEST_CASE("pack/unpack round trips every width, sign and odd length") {
  std::mt19937 rng(3);
  for (int bits = 2; bits <= 8; ++bits)
    for (bool is_signed : {true, false})
      for (int n : {1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 33}) {
        const int lo = is_signed ? -(1 << (bits - 1)) : 0;
        const int hi = is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
        std::uniform_int_distribution<int> code(lo, hi);
        std::vector<int32_t> codes(static_cast<size_t>(n)), back(static_cast<size_t>(n));
        for (auto& c : codes) c = code(rng);
        codes[0] = lo;
        codes[size_t(n - 1)] = hi;
        std::vector<uint8_t> packed(lowbit::packed_row_bytes(n, bits) + 1, 0xAB);
        lowbit::pack_codes(codes.data(), n, bits, packed.data());
        CHECK(packed.back() == 0xAB);  // nothing written past the row
        lowbit::unpack_codes(packed.data(), n, bits, is_signed, back.data());
        INFO("bits " << bits << " signed " << is_signed << " n " << n);
        REQUIRE(back == codes);
      }
}
