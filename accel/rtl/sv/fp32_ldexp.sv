// fp32_ldexp: y = a x 2^n in binary32, rounded once to nearest with ties to even (combinational).
//
//   a - binary32; n - any signed 32-bit integer.
//   - exact whenever the result is a normal number: only the exponent changes;
//   - a subnormal result is rounded once (ties to even), e.g. 2^-149 x 2^-1 = +0 and
//     3 x 2^-149 x 2^-1 = 2^-148; results below half the smallest subnormal become 0 with
//     the sign of a;
//   - overflow gives inf with the sign of a (nothing is flagged);
//   - +-0 and +-inf are returned unchanged, a NaN gives the canonical quiet NaN 32'h7fc0_0000.
// Subnormal operands are normalized, so 2^-149 x 2^149 = 1 exactly. The rounding is
// fp32_pkg::round_pack, shared with fp32_add / fp32_mul / fp32_div.
//
// Only |n| <= 300 needs distinguishing: a finite nonzero a lies in [2^-149, 2^128), so for
// n >= 278 the scaled value is >= 2^129 (overflow) and for n <= -278 it is < 2^-150 (rounds to
// zero). Clamping n to [-300, 300] therefore changes no result and keeps the exponent adder
// 12 bits wide (fp32_pkg::exp_t).
module fp32_ldexp (
  input  logic [31:0]        a,
  input  logic signed [31:0] n,
  output logic [31:0]        y
);

  localparam logic signed [31:0] NMAX = 32'sd300;

  fp32_pkg::exp_t     nc;     // n clamped to [-NMAX, NMAX]
  fp32_pkg::rounded_t r;      // a x 2^nc rounded, for finite nonzero a
  logic               unused_overflow;    // ldexp flags nothing

  always_comb begin
    if (n > NMAX)       nc = signed'(fp32_pkg::EXP_W'(NMAX));
    else if (n < -NMAX) nc = -signed'(fp32_pkg::EXP_W'(NMAX));
    else                nc = signed'(fp32_pkg::EXP_W'(n));
    // a = significand x 2^(exponent - 23); round_pack normalizes a subnormal significand.
    r = fp32_pkg::round_pack(a[31], fp32_pkg::exponent(a[30:23]) + nc,
                             {fp32_pkg::significand(a[30:0]), 24'd0});
    unused_overflow = r.overflow;
    if (fp32_pkg::is_nan(a[30:0]))                                          y = fp32_pkg::QNAN;
    else if (fp32_pkg::is_inf(a[30:0]) || fp32_pkg::is_zero(a[30:0]))      y = a;
    else                                                                    y = r.bits;
  end

endmodule
