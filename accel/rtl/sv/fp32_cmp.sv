// fp32_cmp: binary32 comparison, minimum and maximum (combinational).
//
//   lt, eq, unordered - the IEEE 754 comparison predicates: unordered when either operand is a
//       NaN (then lt = eq = 0); -0 == +0; otherwise lt = (a < b), eq = (a == b). a <= b is
//       lt | eq, a > b is the same unit with the operands swapped.
//   min, max - IEEE 754-2019 minimum / maximum: a NaN operand gives the canonical quiet NaN
//       32'h7fc0_0000 (NaN propagates, as in numpy's np.minimum / np.maximum), and -0 is
//       taken as less than +0, so min(-0, +0) = -0 and max(-0, +0) = +0 in either order.
//       numpy's result for a pair of zeros of opposite signs depends on its code path (it
//       returns one operand as is); the spec's clamps compare against nonzero bounds, where
//       the two agree, and otherwise the sign of a zero maximum does not change any result
//       of the nonlinearity (m only enters as a - m and exp(+-0) = 1).
//
// Ordering binary32 by its bits: for equal signs the magnitude (exponent and mantissa as one
// unsigned integer) orders the values, reversed for negative numbers; for different signs
// the negative one is smaller unless both are zeros.
module fp32_cmp (
  input  logic [31:0] a,
  input  logic [31:0] b,
  output logic        lt,
  output logic        eq,
  output logic        unordered,
  output logic [31:0] min,
  output logic [31:0] max
);

  logic both_zero;
  logic mag_lt;     // |a| < |b|
  logic below;      // a < b in the order with -0 < +0 (for min / max)

  always_comb begin
    unordered = fp32_pkg::is_nan(a[30:0]) || fp32_pkg::is_nan(b[30:0]);
    both_zero = fp32_pkg::is_zero(a[30:0]) && fp32_pkg::is_zero(b[30:0]);
    mag_lt    = a[30:0] < b[30:0];
    if (a[31] != b[31])  below = a[31];               // -x < +y; here also -0 < +0
    else if (a[31])      below = b[30:0] < a[30:0];   // both negative: larger magnitude is less
    else                 below = mag_lt;
    lt  = !unordered && below && !both_zero;
    eq  = !unordered && ((a == b) || both_zero);
    min = unordered ? fp32_pkg::QNAN : (below ? a : b);
    max = unordered ? fp32_pkg::QNAN : (below ? b : a);
  end

endmodule
