// fp32_pkg: shared helpers for the IEEE 754 binary32 units (fp32_add, fp32_mul, ...).
//
// Rounding is round-to-nearest, ties-to-even only. Subnormals are produced and consumed (no
// flush-to-zero). Every NaN result is the canonical quiet NaN QNAN (0x7fc00000): NaN payloads
// are not propagated.
//
// round_pack() is the one place where results are rounded; a unit computes its exact (or
// exact-up-to-sticky) result as sign, exponent and significand and hands it over:
//
//     value = (-1)^sign * sig * 2^(exp - (SIG_W - 1))
//
// i.e. sig[SIG_W-1] weighs 2^exp and sig is a fixed-point number with its binary point right
// below its MSB. sig need not be normalised (leading zeros are fine, round_pack shifts them
// out). Bits of a wider exact result below sig[0] must be ORed into sig[0] ("sticky"); that is
// exact as long as the result's round bit lies at sig[1] or above after normalisation, i.e.
// the caller keeps at least 26 significant bits above sig[0] whenever sticky bits were folded.
// sig == 0 packs to a zero of the given sign (the caller decides the sign of an exact zero).
//
// Written in the SystemVerilog subset that both Verilator and Yosys read (docs/rtl.md): units
// name the items as fp32_pkg::round_pack etc. (no import), functions assign their result to
// the function's name (no return), and exp_t casts are spelled signed'(EXP_W'(x)).
package fp32_pkg;

  localparam int SIG_W = 48;                   // holds the exact product of two 24-bit significands
  localparam int LZ_W  = 6;                    // enough bits for a count 0..SIG_W
  localparam int EXP_W = 12;                   // width of exp_t: cast with signed'(EXP_W'(x))
  localparam logic [31:0] QNAN = 32'h7fc0_0000;

  typedef logic signed [EXP_W-1:0] exp_t;     // unbiased exponent, headroom for products/quotients

  typedef struct packed {
    logic [31:0] bits;      // packed binary32 result
    logic        overflow;  // the rounded result is infinite (the input value was finite)
  } rounded_t;

  // Classification and unpacking; they take the magnitude bits x[30:0] of a binary32 pattern x.
  function automatic logic is_nan(input logic [30:0] m);
    is_nan = m[30:23] == 8'hff && m[22:0] != 23'd0;
  endfunction

  function automatic logic is_snan(input logic [30:0] m);
    is_snan = is_nan(m) && !m[22];
  endfunction

  function automatic logic is_inf(input logic [30:0] m);
    is_inf = m == 31'h7f80_0000;
  endfunction

  function automatic logic is_zero(input logic [30:0] m);
    is_zero = m == 31'd0;
  endfunction

  // Significand with the hidden bit: 1.f for normals, 0.f for subnormals (and zero).
  function automatic logic [23:0] significand(input logic [30:0] m);
    significand = {m[30:23] != 8'd0, m[22:0]};
  endfunction

  // Unbiased exponent of significand()'s bit 23, from the exponent field m[30:23]: subnormals
  // share the exponent of the smallest normal (-126).
  function automatic exp_t exponent(input logic [7:0] e);
    exponent = (e == 8'd0) ? -signed'(EXP_W'(126))
                           : signed'(EXP_W'({4'd0, e})) - signed'(EXP_W'(127));
  endfunction

  // Count of leading zeros of x; SIG_W for x == 0.
  function automatic logic [LZ_W-1:0] clz(input logic [SIG_W-1:0] x);
    logic [LZ_W-1:0] n;
    n = LZ_W'(SIG_W);
    for (int i = 0; i < SIG_W; i++)
      if (x[i]) n = LZ_W'(SIG_W - 1 - i);
    clz = n;
  endfunction

  // Round (-1)^sign * sig * 2^(exp - (SIG_W-1)) to binary32, round-to-nearest-ties-to-even:
  // normal, subnormal or zero results; overflow gives infinity of that sign.
  function automatic rounded_t round_pack(input logic sign, input exp_t exp,
                                          input logic [SIG_W-1:0] sig);
    logic [31:0]      bits;     // the fields of the result (Yosys takes no struct variable
    logic             overflow; // in a function, so they are assembled at the end)
    logic [LZ_W-1:0]  lz;
    exp_t             room;     // left shift that puts weight 2^-126 at the MSB
    exp_t             rsh;      // right shift for results below the subnormal grid's top
    exp_t             e_top;    // unbiased exponent of the leading one
    logic [SIG_W-1:0] n;        // aligned: hidden bit, 23 fraction bits, round bit, the rest
    logic             shifted_out;
    logic [7:0]       biased;
    logic             lsb, rnd, sticky, inc;
    logic [30:0]      mag;

    lz          = clz(sig);
    room        = exp + signed'(EXP_W'(126));
    rsh         = -room;
    e_top       = exp - signed'(EXP_W'(lz));
    shifted_out = 1'b0;
    if (room < 0) begin
      // Below 2^-126: denormalise, folding what falls off into shifted_out.
      if (rsh >= signed'(EXP_W'(SIG_W))) begin
        n           = '0;
        shifted_out = |sig;
      end else begin
        n           = sig >> rsh;
        shifted_out = |(sig & ~({SIG_W{1'b1}} << rsh));
      end
    end else if (room < signed'(EXP_W'(lz))) begin
      n = sig << room;             // subnormal: stop at exponent -126
    end else begin
      n = sig << lz;               // normal: leading one at the MSB
    end

    biased = n[SIG_W-1] ? e_top[7:0] + 8'd127 : 8'd0;
    lsb    = n[SIG_W-24];
    rnd    = n[SIG_W-25];
    sticky = shifted_out || (n[SIG_W-26:0] != '0);
    inc    = rnd && (sticky || lsb);
    // The increment carries from the fraction into the exponent field by itself: subnormal to
    // normal, 1.11..1 to 10.0, and the largest finite to infinity.
    mag    = {biased, n[SIG_W-2 -: 23]} + 31'(inc);

    overflow = (n[SIG_W-1] && e_top > signed'(EXP_W'(127))) || mag[30:23] == 8'hff;
    if (sig == '0)
      bits = {sign, 31'd0};
    else if (overflow)
      bits = {sign, 8'hff, 23'd0};
    else
      bits = {sign, mag};
    round_pack = {bits, overflow};   // rounded_t's field order
  endfunction

endpackage
