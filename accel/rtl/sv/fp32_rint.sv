// fp32_rint: y = the integer nearest to a, ties to even, as binary32 (combinational).
//
//   - the sign is kept: -0 -> -0, -0.4 -> -0, -0.5 -> -0, -1.5 -> -2, -2.5 -> -2;
//   - |a| >= 2^23 is already an integer and is returned unchanged, as are +-inf;
//   - a NaN gives the canonical quiet NaN 32'h7fc0_0000.
// Same values as numpy's np.rint on float32 (IEEE roundToIntegralTiesToEven); every result is
// exact, since binary32 holds every integer up to 2^24 and the largest rounded value is 2^23.
//
// No integer conversion: for 1 <= |a| < 2^23 the fraction is the low k = 150 - e bits of the
// mantissa field (e the biased exponent, 1 <= k <= 23). Those bits are cleared, and 2^k (one
// unit of the integer) is added to the exponent-and-mantissa word when rounding up; a carry out
// of the mantissa increments the exponent, as 1.5 -> 2 or 2^23 - 0.5 -> 2^23 need.
// 0.5 <= |a| < 1 (e = 126) rounds to 1, except the tie 0.5 itself, which goes to 0 (even).
module fp32_rint (
  input  logic [31:0] a,
  output logic [31:0] y
);

  logic [7:0]  e;
  logic [4:0]  k;          // fraction bits in the mantissa field, for 127 <= e <= 149
  logic [22:0] frac_mask;  // the k fraction bits
  logic [23:0] sig;        // significand with the implicit one, to read the integer's LSB
  logic        round_bit, sticky, lsb, up;
  logic [30:0] mag;

  always_comb begin
    e         = a[30:23];
    k         = 5'(8'd150 - e);            // meaningful only for 127 <= e <= 149
    frac_mask = 23'((24'd1 << k) - 24'd1);
    sig       = {1'b1, a[22:0]};
    round_bit = |(a[22:0] & (frac_mask ^ (frac_mask >> 1)));   // the top fraction bit
    sticky    = |(a[22:0] & (frac_mask >> 1));                 // the fraction bits below it
    lsb       = |(sig & (24'd1 << k));                         // the integer's lowest bit
    up        = round_bit & (sticky | lsb);
    mag       = {e, a[22:0] & ~frac_mask} + (up ? (31'd1 << k) : 31'd0);

    if (fp32_pkg::is_nan(a[30:0])) y = fp32_pkg::QNAN;
    else if (e >= 8'd150)  y = a;                              // integer, or inf
    else if (e >= 8'd127)  y = {a[31], mag};
    else if (e == 8'd126)  y = {a[31], (a[22:0] != 23'd0) ? 31'h3f80_0000 : 31'd0};
    else                   y = {a[31], 31'd0};                 // |a| < 0.5, zeros included
  end

endmodule
