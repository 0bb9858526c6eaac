// fp32_mul: IEEE 754 binary32 multiplier, combinational. y = a * b.
//
// The exact 48-bit product of the 24-bit significands is rounded once, round-to-nearest-ties-
// to-even, into the normal or subnormal range (no flush-to-zero); underflow to zero keeps the
// sign (the sign is always sign(a) xor sign(b)). inf * finite nonzero is inf; 0 * inf is NaN.
// NaN results are the canonical quiet NaN 0x7fc00000 (payloads are not propagated).
// Status: overflow = finite operands, infinite result;
//         invalid  = 0 * inf or a signalling NaN operand.
module fp32_mul (
  input  logic [31:0] a,
  input  logic [31:0] b,
  output logic [31:0] y,
  output logic        overflow,
  output logic        invalid
);

  logic        sign;
  logic [47:0] prod;          // exact product of the significands; bit 46 weighs
                              // 2^(exponent(a) + exponent(b)), so bit 47 one more
  fp32_pkg::rounded_t r;

  always_comb begin
    sign = a[31] ^ b[31];
    prod = fp32_pkg::significand(a[30:0]) * fp32_pkg::significand(b[30:0]);
    r    = fp32_pkg::round_pack(sign, fp32_pkg::exponent(a[30:23]) + fp32_pkg::exponent(b[30:23])
                                      + signed'(fp32_pkg::EXP_W'(1)), prod);

    y        = r.bits;
    overflow = 1'b0;
    invalid  = fp32_pkg::is_snan(a[30:0]) || fp32_pkg::is_snan(b[30:0]);
    if (fp32_pkg::is_nan(a[30:0]) || fp32_pkg::is_nan(b[30:0])) begin
      y = fp32_pkg::QNAN;
    end else if ((fp32_pkg::is_inf(a[30:0]) && fp32_pkg::is_zero(b[30:0])) ||
                 (fp32_pkg::is_zero(a[30:0]) && fp32_pkg::is_inf(b[30:0]))) begin
      y       = fp32_pkg::QNAN;
      invalid = 1'b1;
    end else if (fp32_pkg::is_inf(a[30:0]) || fp32_pkg::is_inf(b[30:0])) begin
      y = {sign, 8'hff, 23'd0};
    end else begin
      overflow = r.overflow;
    end
  end

endmodule
