// int_to_fp32: y = v x 2^e as binary32, rounded once to nearest with ties to even
// (combinational, latency 0).
//
//   v - signed two's-complement W-bit integer (any value, -2^(W-1) included);
//   e - signed EW-bit exponent offset: the value converted is v * 2^e exactly. The exact dot
//       register fixed<IL,FL> of kernel step 2 has e = -FL, and this unit is step 3's R(s_i):
//       the exact dot leaves its register through this one rounding.
//   y - the correctly rounded binary32: normal or subnormal results (no flush-to-zero); a
//       nonzero v whose value lies below half the smallest subnormal gives a zero with v's sign
//       (-0 for negative v, as accel.numerics.quantize does); overflow gives inf with v's sign;
//       v = 0 gives +0.
//   overflow - the rounded result is infinite.
//
// The rounding is fp32_pkg::round_pack, shared with the fp32 arithmetic units. It takes a
// SIG_W-bit (48) significand and is exact when every bit of the value is in it, or when the
// bits below its LSB are ORed into sig[0] with at least 26 significant bits above (its header).
// W <= SIG_W: |v| fits as it is. W > SIG_W: |v| is first normalised (leading one at the top),
// then its top SIG_W-1 bits are kept and the rest folded into sig[0] as sticky: 47 significant
// bits sit above the sticky bit, more than the 26 round_pack needs.
//
// Only part of e's range matters: a nonzero |v| lies in [2^e, 2^(e+W-1)], so e >= 128 always
// overflows and e <= -(W+151) always rounds to zero (|v| * 2^e <= 2^-152 < 2^-150, half the
// smallest subnormal). Clamping e into [E_LO, E_HI] changes no result and keeps the exponent
// inside fp32_pkg::exp_t (12 bits) for any EW <= 32.
module int_to_fp32 #(
  parameter int W  = 48,  // width of v, >= 2
  parameter int EW = 10   // width of e, 2..32 (10 bits: e in [-512, 511])
) (
  input  logic signed [W-1:0]  v,
  input  logic signed [EW-1:0] e,
  output logic [31:0]          y,
  output logic                 overflow
);

  localparam int E_LO = -(W + 151);
  localparam int E_HI = 128;
  localparam int LW   = $clog2(W + 1);   // a leading-zero count 0..W (W > SIG_W only)

  logic          sign;
  logic [W-1:0]  mag;      // |v|; -2^(W-1) gives 2^(W-1), which W unsigned bits hold
  int            ei;       // e, sign-extended, then clamped to [E_LO, E_HI]
  fp32_pkg::exp_t     exp;   // weight of sig[SIG_W-1] (fp32_pkg::round_pack's convention)
  logic [fp32_pkg::SIG_W-1:0] sig;
  fp32_pkg::rounded_t r;

  always_comb begin
    sign = v[W-1];
    mag  = sign ? W'(-v) : W'(v);
    ei   = 32'(e);                    // sign-extended: e is signed
    if (ei < E_LO)      ei = E_LO;
    else if (ei > E_HI) ei = E_HI;
  end

  if (W <= fp32_pkg::SIG_W) begin : g_direct
    // sig = mag zero-extended: sig[0] weighs 2^e, so sig[SIG_W-1] weighs 2^(e + SIG_W - 1).
    always_comb begin
      sig = fp32_pkg::SIG_W'(mag);
      exp = signed'(fp32_pkg::EXP_W'(ei + (fp32_pkg::SIG_W - 1)));
    end
  end else begin : g_normalise
    logic [LW-1:0] lz;     // leading zeros of mag (W for mag = 0)
    logic [W-1:0]  norm;   // mag << lz: the leading one at bit W-1
    always_comb begin
      lz = LW'(W);
      for (int i = 0; i < W; i++)
        if (mag[i]) lz = LW'(W - 1 - i);
      norm = mag << lz;
      // norm[W-1] weighs 2^(e + W - 1 - lz); below the kept bits only "nonzero" matters.
      sig  = {norm[W-1 -: fp32_pkg::SIG_W-1], |norm[W-fp32_pkg::SIG_W:0]};
      exp  = signed'(fp32_pkg::EXP_W'(ei + (W - 1) - signed'(32'(lz))));
    end
  end

  always_comb begin
    // round_pack packs sig = 0 as a zero of the given sign; v = 0 has sign 0, so +0.
    r        = fp32_pkg::round_pack(sign, exp, sig);
    y        = r.bits;
    overflow = r.overflow;
  end

endmodule
