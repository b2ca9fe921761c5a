// test_blocks.cpp: one hand-made block per format, its bytes written out and every decoded float
// worked out by hand from the layout (the arithmetic in the comments).
#include <lowbit/formats/format.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <vector>

using namespace lowbit::formats;

namespace {

uint32_t bits(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  return b;
}

// Decodes `block` with F and compares every float with `want` bit for bit (signed zeros too);
// then checks pack(unpack(block)) gives the same bytes back.
template <class F>
void check_block(const std::vector<uint8_t>& block, const std::vector<float>& want) {
  REQUIRE(block.size() == size_t(F::type_size));
  REQUIRE(want.size() == size_t(F::block_size));
  std::vector<float> out(F::block_size);
  F::decode(block.data(), out.data());
  for (int i = 0; i < F::block_size; ++i) {
    INFO("weight " << i << ": got " << out[size_t(i)] << " want " << want[size_t(i)]);
    REQUIRE(bits(out[size_t(i)]) == bits(want[size_t(i)]));
  }
  BlockParams p;
  std::vector<int8_t> codes(F::block_size);
  F::unpack(block.data(), p, codes.data());
  std::vector<uint8_t> back(F::type_size, 0xCD);
  F::pack(p, codes.data(), back.data());
  REQUIRE(back == block);
}

}  // namespace

TEST_CASE("Q8_0: d = 0.5, codes 1, -1, 127, -128, 3") {
  // d = 0x3800 = 0.5, stored little-endian: 00 38.
  std::vector<uint8_t> b = {0x00, 0x38};
  std::vector<uint8_t> qs(32, 0x00);
  qs[0] = 0x01;   //  1 * 0.5 = 0.5
  qs[1] = 0xFF;   // -1 * 0.5 = -0.5
  qs[2] = 0x7F;   //  127 * 0.5 = 63.5
  qs[3] = 0x80;   // -128 * 0.5 = -64
  qs[31] = 0x03;  //  3 * 0.5 = 1.5
  b.insert(b.end(), qs.begin(), qs.end());
  std::vector<float> want(32, 0.0f);  // code 0: 0 * 0.5 = +0
  want[0] = 0.5f;
  want[1] = -0.5f;
  want[2] = 63.5f;
  want[3] = -64.0f;
  want[31] = 1.5f;
  check_block<Q8_0>(b, want);
  BlockParams p;
  int8_t c[32];
  Q8_0::unpack(b.data(), p, c);
  CHECK(p.d == 0x3800);
  CHECK(c[3] == -128);
}

TEST_CASE("Q4_0: d = 2, nibbles hold q + 8, weight i >= 16 in the high nibble") {
  // d = 0x4000 = 2.0.
  std::vector<uint8_t> b = {0x00, 0x40};
  std::vector<uint8_t> qs(16, 0x88);  // both nibbles 8: q = 0 -> 0 * 2 = +0
  qs[0] = 0x9F;  // low F: q = 15 - 8 = 7 -> x[0] = 14; high 9: q = 1 -> x[16] = 2
  qs[1] = 0x08;  // low 8: q = 0 -> x[1] = 0; high 0: q = -8 -> x[17] = -16
  qs[15] = 0xF0;  // low 0: q = -8 -> x[15] = -16; high F: q = 7 -> x[31] = 14
  b.insert(b.end(), qs.begin(), qs.end());
  std::vector<float> want(32, 0.0f);
  want[0] = 14;
  want[16] = 2;
  want[17] = -16;
  want[15] = -16;
  want[31] = 14;
  check_block<Q4_0>(b, want);
}

TEST_CASE("Q4_1: d = 1, m = -2, x = q * d + m") {
  // d = 0x3C00 = 1, m = 0xC000 = -2.
  std::vector<uint8_t> b = {0x00, 0x3C, 0x00, 0xC0};
  std::vector<uint8_t> qs(16, 0x00);  // q = 0 -> 0 * 1 + (-2) = -2
  qs[0] = 0x3A;   // low A: 10 - 2 = 8 -> x[0]; high 3: 3 - 2 = 1 -> x[16]
  qs[5] = 0xF2;   // low 2: 2 - 2 = +0 -> x[5]; high F: 15 - 2 = 13 -> x[21]
  b.insert(b.end(), qs.begin(), qs.end());
  std::vector<float> want(32, -2.0f);
  want[0] = 8;
  want[16] = 1;
  want[5] = 0;
  want[21] = 13;
  check_block<Q4_1>(b, want);
}

TEST_CASE("Q5_0: d = 0.25, the fifth bit of weight i is bit i of qh") {
  // d = 0x3400 = 0.25. qh = bits 0, 16 and 31 set: bytes 01 00 01 80.
  std::vector<uint8_t> b = {0x00, 0x34, 0x01, 0x00, 0x01, 0x80};
  std::vector<uint8_t> qs(16, 0x00);  // nibble 0, fifth bit 0: u = 0, q = -16 -> -4
  qs[0] = 0x21;   // x[0]: 1 | 16 = 17 -> q = 1 -> 0.25;  x[16]: 2 | 16 = 18 -> q = 2 -> 0.5
  qs[15] = 0xF0;  // x[15]: 0, bit 15 clear -> q = -16 -> -4;  x[31]: 15 | 16 = 31 -> q = 15 -> 3.75
  qs[3] = 0x0C;   // x[3]: 12, bit 3 clear -> q = -4 -> -1;  x[19]: 0 -> q = -16 -> -4
  b.insert(b.end(), qs.begin(), qs.end());
  std::vector<float> want(32, -4.0f);
  want[0] = 0.25f;
  want[16] = 0.5f;
  want[31] = 3.75f;
  want[3] = -1.0f;
  check_block<Q5_0>(b, want);
}

TEST_CASE("Q5_1: d = 0.5, m = 1, five-bit codes") {
  // d = 0x3800 = 0.5, m = 0x3C00 = 1. qh = bit 1 and bit 17: bytes 02 00 02 00.
  std::vector<uint8_t> b = {0x00, 0x38, 0x00, 0x3C, 0x02, 0x00, 0x02, 0x00};
  std::vector<uint8_t> qs(16, 0x00);  // q = 0 -> 0 * 0.5 + 1 = 1
  qs[1] = 0x3F;  // x[1]: 15 | 16 = 31 -> 15.5 + 1 = 16.5;  x[17]: 3 | 16 = 19 -> 9.5 + 1 = 10.5
  qs[2] = 0x40;  // x[2]: 0 -> 1;  x[18]: 4 -> 2 + 1 = 3
  b.insert(b.end(), qs.begin(), qs.end());
  std::vector<float> want(32, 1.0f);
  want[1] = 16.5f;
  want[17] = 10.5f;
  want[18] = 3.0f;
  check_block<Q5_1>(b, want);
}

TEST_CASE("Q2_K: 4-bit scales and mins, 2-bit codes interleaved by shift") {
  // scales[16] | qs[64] | d | dmin. d = 0x3C00 = 1, dmin = 0x3800 = 0.5.
  std::vector<uint8_t> b(84, 0x00);
  b[0] = 0x21;   // sub-block 0: scale 1, min 2 -> dl = 1, ml = 0.5 * 2 = 1
  b[1] = 0x0F;   // sub-block 1: scale 15, min 0 -> dl = 15, ml = 0
  b[6] = 0x12;   // sub-block 6: scale 2, min 1 -> dl = 2, ml = 0.5
  b[14] = 0xF3;  // sub-block 14: scale 3, min 15 -> dl = 3, ml = 7.5
  uint8_t* qs = b.data() + 16;
  qs[0] = 0xE4;   // 11 10 01 00: weight 0 (shift 0) q = 0, weight 32 q = 1, weight 64 q = 2, weight 96 q = 3
  qs[16] = 0x03;  // weight 16 (l = 16, shift 0): q = 3
  qs[32] = 0x40;  // second half, l = 0: weight 128 + 96 = 224 (shift 6): q = 1
  b[80] = 0x00;
  b[81] = 0x3C;
  b[82] = 0x00;
  b[83] = 0x38;
  std::vector<float> want(256, 0.0f);  // scale 0, min 0: 0 * q - 0 = +0
  for (int i = 0; i < 16; ++i) want[size_t(i)] = -1.0f;          // 1 * 0 - 1
  want[16] = 45.0f;                                               // 15 * 3 - 0
  for (int i = 96; i < 112; ++i) want[size_t(i)] = -0.5f;        // 2 * 0 - 0.5
  want[96] = 5.5f;                                                // 2 * 3 - 0.5
  for (int i = 224; i < 240; ++i) want[size_t(i)] = -7.5f;       // 3 * 0 - 7.5
  want[224] = -4.5f;                                              // 3 * 1 - 7.5
  check_block<Q2_K>(b, want);
  BlockParams p;
  int8_t c[256];
  Q2_K::unpack(b.data(), p, c);
  CHECK(p.scales[14] == 3);
  CHECK(p.mins[14] == 15);
  CHECK(c[64] == 2);
}

TEST_CASE("Q3_K: signed 6-bit scales in 12 bytes, 2 low bits plus the high-bit mask") {
  // hmask[32] | qs[64] | scales[12] | d; d = 0x4000 = 2.
  // Scales (stored u = scale + 32): sub-block 0: 1 (u 33 = 10 0001b), 1: -32 (u 0),
  // 8: 31 (u 63 = 11 1111b), 13: -1 (u 31 = 01 1111b), all others 0 (u 32 = 10 0000b).
  // Low nibbles: byte j < 8 holds u_j (low) and u_{j+8} (high): byte 0 = 1 | 15 << 4 = F1,
  // byte 5 = 0 | 15 << 4 = F0, the rest 00. High pairs: byte 8 + i holds u_i, u_{i+4},
  // u_{i+8}, u_{i+12} >> 4 at bits 0, 2, 4, 6: byte 8 = 2 | 2<<2 | 3<<4 | 2<<6 = BA,
  // byte 9 = 0 | 2<<2 | 2<<4 | 1<<6 = 68, bytes 10, 11 = AA.
  std::vector<uint8_t> b(110, 0x00);
  uint8_t* hmask = b.data();
  uint8_t* qs = b.data() + 32;
  uint8_t* sc = b.data() + 96;
  for (int l = 0; l < 32; ++l) hmask[l] = 0xFF;  // high bit set: q = low bits (0 here) -> +-0
  sc[0] = 0xF1;
  sc[5] = 0xF0;
  sc[8] = 0xBA;
  sc[9] = 0x68;
  sc[10] = 0xAA;
  sc[11] = 0xAA;
  b[108] = 0x00;
  b[109] = 0x40;
  qs[0] = 0x03;            // weight 0: low 3, high 1 -> q = 3; dl = 2 * 1 -> 6
  hmask[1] = 0xFE;         // weight 1: low 0, high bit (bit 0) clear -> q = -4 -> 2 * -4 = -8
  qs[16] = 0x03;           // weight 16 (sub-block 1): low 3,
  hmask[16] = 0xBE;        //   high bit 0 clear -> q = -1; dl = 2 * -32 = -64 -> 64;
                           // also bit 6 clear: weight 6*32 + 16 = 208 has high 0
  qs[32] = 0x02;           // weight 128 (sub-block 8): low 2, high (hmask[0] bit 4) 1 -> q = 2;
                           //   dl = 2 * 31 = 62 -> 124
  qs[48] = 0x10;           // weight 128 + 64 + 16 = 208 (shift 4): low 1, high 0 -> q = -3;
                           //   sub-block 13: dl = 2 * -1 = -2 -> 6
  std::vector<float> want(256, 0.0f);  // q = 0: dl * 0 is +0 for dl >= 0, -0 for dl < 0
  for (int i = 16; i < 32; ++i) want[size_t(i)] = -0.0f;   // sub-block 1: -64 * 0
  for (int i = 208; i < 224; ++i) want[size_t(i)] = -0.0f;  // sub-block 13: -2 * 0
  want[0] = 6;
  want[1] = -8;
  want[16] = 64;
  want[128] = 124;
  want[208] = 6;
  check_block<Q3_K>(b, want);
  BlockParams p;
  int8_t c[256];
  Q3_K::unpack(b.data(), p, c);
  CHECK(p.scales[0] == 1);
  CHECK(p.scales[1] == -32);
  CHECK(p.scales[8] == 31);
  CHECK(p.scales[13] == -1);
  CHECK(p.scales[2] == 0);
  CHECK(c[1] == -4);
  CHECK(c[208] == -3);
}

TEST_CASE("Q4_K: 6-bit scales and mins packed in 12 bytes, nibbles by 64-weight chunk") {
  // d | dmin | scales[12] | qs[128]; d = 0x3C00 = 1, dmin = 0x4000 = 2.
  // Sub-blocks: 0: scale 1, min 0; 1: scale 63, min 1; 4: scale 17 (01 0001b), min 35 (10 0011b);
  // 7: scale 63, min 63; others 0.
  // Bytes k < 4: scale_k | (scale_{k+4} >> 4) << 6;  4 + k: min_k | (min_{k+4} >> 4) << 6;
  // 8 + k: (scale_{k+4} & 15) | (min_{k+4} & 15) << 4.
  //  byte 0 = 1 | 1<<6 = 41, byte 4 = 0 | 2<<6 = 80, byte 8 = 1 | 3<<4 = 31,
  //  byte 1 = 63 = 3F, byte 5 = 1 = 01, byte 3 = 0 | 3<<6 = C0, byte 7 = 0 | 3<<6 = C0,
  //  byte 11 = 15 | 15<<4 = FF.
  std::vector<uint8_t> b(144, 0x00);
  b[0] = 0x00;
  b[1] = 0x3C;
  b[2] = 0x00;
  b[3] = 0x40;
  const uint8_t s[12] = {0x41, 0x3F, 0x00, 0xC0, 0x80, 0x01, 0x00, 0xC0, 0x31, 0x00, 0x00, 0xFF};
  std::memcpy(b.data() + 4, s, 12);
  uint8_t* qs = b.data() + 16;
  qs[0] = 0x5A;    // weight 0 (sub 0): q = 10 -> 1*10 - 0 = 10; weight 32 (sub 1): q = 5 -> 63*5 - 2 = 313
  qs[64] = 0x0F;   // weight 128 (sub 4): q = 15 -> 17*15 - 2*35 = 185; weight 160 (sub 5): 0
  qs[127] = 0xF0;  // weight 223 (sub 6): 0; weight 255 (sub 7): q = 15 -> 63*15 - 2*63 = 819
  std::vector<float> want(256, 0.0f);
  for (int i = 33; i < 64; ++i) want[size_t(i)] = -2.0f;     // sub 1, q = 0: 0 - 2*1
  for (int i = 129; i < 160; ++i) want[size_t(i)] = -70.0f;  // sub 4: 0 - 2*35
  for (int i = 224; i < 255; ++i) want[size_t(i)] = -126.0f; // sub 7: 0 - 2*63
  want[0] = 10;
  want[32] = 313;
  want[128] = 185;
  want[255] = 819;
  check_block<Q4_K>(b, want);
  BlockParams p;
  int8_t c[256];
  Q4_K::unpack(b.data(), p, c);
  CHECK(p.scales[4] == 17);
  CHECK(p.mins[4] == 35);
  CHECK(p.scales[7] == 63);
  CHECK(p.mins[7] == 63);
}

TEST_CASE("Q5_K: as Q4_K plus a high-bit plane, bit i / 32 of qh[i % 32]") {
  // d | dmin | scales[12] | qh[32] | qs[128]; d = 0x3800 = 0.5, dmin = 0x3C00 = 1.
  // Sub-block 0: scale 2, min 3; sub-block 5: scale 40 (10 1000b), min 5; others 0.
  //  byte 0 = 2, byte 4 = 3, byte 1 = 0 | (40 >> 4) << 6 = 80, byte 5 = 0 | (5 >> 4) << 6 = 00,
  //  byte 9 = (40 & 15) | (5 & 15) << 4 = 58.
  std::vector<uint8_t> b(176, 0x00);
  b[1] = 0x38;
  b[3] = 0x3C;
  const uint8_t s[12] = {0x02, 0x80, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x58, 0x00, 0x00};
  std::memcpy(b.data() + 4, s, 12);
  uint8_t* qh = b.data() + 16;
  uint8_t* qs = b.data() + 48;
  qs[0] = 0x0F;   // weight 0: low 15,
  qh[0] = 0x21;   //   high bit 0 set -> q = 31; dl = 0.5 * 2 = 1 -> 31 - 3 = 28;
                  // bit 5: weight 5*32 + 0 = 160 gets high bit 1
  qs[64] = 0x70;  // weight 160 (chunk 2, high nibble): low 7 -> q = 23; dl = 0.5 * 40 = 20 -> 460 - 5 = 455
  qh[1] = 0x20;   // weight 161: low 0 (qs[65] high nibble), high 1 -> q = 16 -> 320 - 5 = 315
  std::vector<float> want(256, 0.0f);
  for (int i = 1; i < 32; ++i) want[size_t(i)] = -3.0f;     // sub 0, q = 0: 0 - 3
  for (int i = 162; i < 192; ++i) want[size_t(i)] = -5.0f;  // sub 5, q = 0: 0 - 5
  want[0] = 28;
  want[160] = 455;
  want[161] = 315;
  check_block<Q5_K>(b, want);
}

TEST_CASE("Q6_K: int8 scales, 4 low bits in ql, 2 high bits in qh, x = (d * scale) * q") {
  // ql[128] | qh[64] | scales[16] | d; d = 0x3400 = 0.25.
  // Scales: sub 0: -128 (80), sub 1: 127 (7F), sub 2: 1, sub 15: -3 (FD), others 0.
  // qh = AA everywhere (every 2-bit field 10b) and ql = 0: u = 32, q = 0 by default.
  std::vector<uint8_t> b(210, 0x00);
  uint8_t* ql = b.data();
  uint8_t* qh = b.data() + 128;
  for (int i = 0; i < 64; ++i) qh[i] = 0xAA;
  b[192 + 0] = 0x80;
  b[192 + 1] = 0x7F;
  b[192 + 2] = 0x01;
  b[192 + 15] = 0xFD;
  b[208] = 0x00;
  b[209] = 0x34;
  ql[0] = 0x0F;    // weight 0: low 15,
  qh[0] = 0xAB;    //   high (bits 0-1) 3 -> u = 63, q = 31; (0.25 * -128) * 31 = -992
  qh[16] = 0xA8;   // weight 16 (sub 1): low 0, high 0 -> q = -32; (0.25 * 127) * -32 = -1016
  ql[32] = 0x05;   // weight 32 (sub 2, k = 1: ql[32] low, qh[0] bits 2-3 = 2): u = 37, q = 5 -> 1.25
  ql[127] = 0x90;  // weight 255 (n 1, k 3, l 31: ql[64 + 32 + 31] high nibble = 9,
  qh[63] = 0x6A;   //   qh[32 + 31] bits 6-7 = 1): u = 25, q = -7; (0.25 * -3) * -7 = 5.25
  std::vector<float> want(256, 0.0f);
  for (int i = 0; i < 16; ++i) want[size_t(i)] = -0.0f;     // -32 * 0
  for (int i = 240; i < 256; ++i) want[size_t(i)] = -0.0f;  // -0.75 * 0
  want[0] = -992;
  want[16] = -1016;
  want[32] = 1.25f;
  want[255] = 5.25f;
  check_block<Q6_K>(b, want);
  BlockParams p;
  int8_t c[256];
  Q6_K::unpack(b.data(), p, c);
  CHECK(p.scales[0] == -128);
  CHECK(p.scales[1] == 127);
  CHECK(c[0] == 31);
  CHECK(c[16] == -32);
  CHECK(c[255] == -7);
}

TEST_CASE("IQ4_NL: nibbles index the 16 levels, x = d * level") {
  // d = 0x3800 = 0.5; levels -127 -104 -83 -65 -49 -35 -22 -10 1 13 25 38 53 69 89 113.
  std::vector<uint8_t> b = {0x00, 0x38};
  std::vector<uint8_t> qs(16, 0x88);  // index 8: level 1 -> 0.5
  qs[0] = 0xF0;  // x[0]: index 0 -> 0.5 * -127 = -63.5;  x[16]: index 15 -> 0.5 * 113 = 56.5
  qs[1] = 0x78;  // x[1]: index 8 -> 0.5;  x[17]: index 7 -> 0.5 * -10 = -5
  b.insert(b.end(), qs.begin(), qs.end());
  std::vector<float> want(32, 0.5f);
  want[0] = -63.5f;
  want[16] = 56.5f;
  want[17] = -5.0f;
  check_block<IQ4_NL>(b, want);
  BlockParams p;
  int8_t c[32];
  IQ4_NL::unpack(b.data(), p, c);
  CHECK(c[0] == -127);  // codes are the levels
  CHECK(c[16] == 113);
  CHECK(c[17] == -10);
}

TEST_CASE("IQ4_XS: signed 6-bit scales in scales_l/scales_h, levels as IQ4_NL") {
  // d | scales_h | scales_l[4] | qs[128]; d = 0x3C00 = 1.
  // Scales (u = scale + 32): sub 0: -32 (u 0), sub 1: 31 (u 63), sub 5: 1 (u 33), others 0 (u 32).
  // scales_l: nibble j % 2 of byte j / 2 = u_j & 15: byte 0 = 0 | 15 << 4 = F0, byte 2 = 0 | 1 << 4 = 10.
  // scales_h: bits 2j = u_j >> 4: j0 0, j1 3, j2..j7 2 -> 10 10 10 10 10 10 11 00b = AAAC.
  std::vector<uint8_t> b(136, 0x88);  // qs default: index 8 = level 1
  b[0] = 0x00;
  b[1] = 0x3C;
  b[2] = 0xAC;
  b[3] = 0xAA;
  b[4] = 0xF0;
  b[5] = 0x00;
  b[6] = 0x10;
  b[7] = 0x00;
  uint8_t* qs = b.data() + 8;
  qs[0] = 0x8F;   // weight 0: index 15 = 113, dl = 1 * -32 -> -3616; weight 16: level 1 -> -32
  qs[17] = 0x08;  // sub 1 (qs[16..31]): weight 32 + 1 = 33 low nibble level 1 -> 31;
                  //   weight 32 + 16 + 1 = 49 high nibble index 0 = -127 -> 31 * -127 = -3937
  qs[83] = 0x80;  // sub 5 (qs[80..95]): weight 163 low nibble index 0 -> 1 * -127 = -127
  std::vector<float> want(256, 0.0f);  // scale 0: (1 * 0) * 1 = +0
  for (int i = 0; i < 32; ++i) want[size_t(i)] = -32.0f;
  for (int i = 32; i < 64; ++i) want[size_t(i)] = 31.0f;
  for (int i = 160; i < 192; ++i) want[size_t(i)] = 1.0f;
  want[0] = -3616;
  want[49] = -3937;
  want[163] = -127;
  check_block<IQ4_XS>(b, want);
  BlockParams p;
  int8_t c[256];
  IQ4_XS::unpack(b.data(), p, c);
  CHECK(p.scales[0] == -32);
  CHECK(p.scales[1] == 31);
  CHECK(p.scales[5] == 1);
  CHECK(c[49] == -127);
}
