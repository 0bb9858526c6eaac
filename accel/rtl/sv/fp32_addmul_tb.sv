// Test wrapper (simulation only): fp32_add and fp32_mul side by side on the same operands, so
// that one build serves the cocotb tests of both units.
module fp32_addmul_tb (
  input  logic [31:0] a,
  input  logic [31:0] b,
  input  logic        sub,
  output logic [31:0] add_y,
  output logic        add_overflow,
  output logic        add_invalid,
  output logic [31:0] mul_y,
  output logic        mul_overflow,
  output logic        mul_invalid
);

  fp32_add u_add (.a, .b, .sub, .y(add_y), .overflow(add_overflow), .invalid(add_invalid));
  fp32_mul u_mul (.a, .b, .y(mul_y), .overflow(mul_overflow), .invalid(mul_invalid));

endmodule
