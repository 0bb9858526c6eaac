// fp32_add: IEEE 754 binary32 adder/subtractor, combinational. y = a + b, or a - b when sub = 1.
//
// Round-to-nearest-ties-to-even, subnormal inputs and outputs (no flush-to-zero).
// Zeros: an exact zero sum of operands of opposite (effective) signs is +0, e.g. x + (-x) = +0
// and (+0) + (-0) = +0; (-0) + (-0) = -0. Infinities add as in IEEE 754; inf - inf is NaN.
// NaN results are the canonical quiet NaN 0x7fc00000 (payloads are not propagated).
// Status: overflow = finite operands, infinite result;
//         invalid  = inf - inf (effective subtraction of infinities) or a signalling NaN operand.
module fp32_add (
  input  logic [31:0] a,
  input  logic [31:0] b,
  input  logic        sub,
  output logic [31:0] y,
  output logic        overflow,
  output logic        invalid
);

  logic [31:0] bb;            // b with the effective sign of the operation
  logic        swap;          // |b| > |a|
  logic [31:0] hi, lo;        // |hi| >= |lo|
  logic        eff_sub;       // the magnitudes are subtracted
  fp32_pkg::exp_t dexp;       // exponent difference, >= 0
  logic [26:0] lo_ext;        // lo's significand and three zero bits (guard, round, sticky)
  logic [26:0] lo_al;         // ... shifted to hi's exponent, bits shifted out ORed into bit 0
  logic [27:0] sum;           // carry, 24 significand bits, guard, round, sticky
  fp32_pkg::rounded_t r;

  always_comb begin
    bb      = {b[31] ^ sub, b[30:0]};
    swap    = bb[30:0] > a[30:0];
    hi      = swap ? bb : a;
    lo      = swap ? a : bb;
    eff_sub = hi[31] ^ lo[31];
    dexp    = fp32_pkg::exponent(hi[30:23]) - fp32_pkg::exponent(lo[30:23]);

    // Alignment. Bits shifted out can only be nonzero for dexp >= 4; then at most one bit
    // cancels, so the result's round bit sits at sum[1] or above and folding them into one
    // sticky bit at sum[0] cannot move the result across a rounding boundary.
    lo_ext  = {fp32_pkg::significand(lo[30:0]), 3'b000};
    if (dexp >= signed'(fp32_pkg::EXP_W'(27))) begin
      lo_al = {26'd0, lo_ext != '0};          // all of it is sticky
    end else begin
      lo_al    = lo_ext >> dexp;
      lo_al[0] = lo_al[0] | (|(lo_ext & ~({27{1'b1}} << dexp)));
    end

    sum = eff_sub ? {1'b0, fp32_pkg::significand(hi[30:0]), 3'b000} - {1'b0, lo_al}
                  : {1'b0, fp32_pkg::significand(hi[30:0]), 3'b000} + {1'b0, lo_al};

    // sum[27] weighs 2^(exponent(hi) + 1). The sign is hi's, except that an exact zero from
    // opposite signs is +0 (a zero sum without subtraction means both operands were -0 or +0).
    r = fp32_pkg::round_pack(hi[31] && !(eff_sub && sum == '0),
                             fp32_pkg::exponent(hi[30:23]) + signed'(fp32_pkg::EXP_W'(1)),
                             {sum, 20'd0});

    y        = r.bits;
    overflow = 1'b0;
    invalid  = fp32_pkg::is_snan(a[30:0]) || fp32_pkg::is_snan(b[30:0]);
    if (fp32_pkg::is_nan(a[30:0]) || fp32_pkg::is_nan(b[30:0])) begin
      y = fp32_pkg::QNAN;
    end else if (fp32_pkg::is_inf(a[30:0]) && fp32_pkg::is_inf(b[30:0]) && eff_sub) begin
      y       = fp32_pkg::QNAN;
      invalid = 1'b1;
    end else if (fp32_pkg::is_inf(hi[30:0])) begin
      y = hi;                  // the larger magnitude is the infinity
    end else begin
      overflow = r.overflow;
    end
  end

endmodule
