// Test wrapper (simulation only), so that one build serves every cocotb test of
// tests/accel/rtl/tb_convert_update.py: int_to_fp32 at three widths (48: the default; 24:
// narrower than binary32's significand plus round bit; 54: the emulated backend's dot_bits,
// wider than fp32_pkg::round_pack's 48-bit significand) and offset_update. The units share no
// ports.
module convert_update_tb #(
  parameter int W_A     = 48,
  parameter int W_B     = 24,
  parameter int W_C     = 54,
  parameter int EW      = 10,
  parameter int MAXBITS = 16,
  localparam int FW     = $clog2(MAXBITS + 1)
) (
  // int_to_fp32, one port set per width
  input  logic signed [W_A-1:0]     v_a,
  input  logic signed [EW-1:0]      e_a,
  output logic [31:0]               y_a,
  output logic                      overflow_a,
  input  logic signed [W_B-1:0]     v_b,
  input  logic signed [EW-1:0]      e_b,
  output logic [31:0]               y_b,
  output logic                      overflow_b,
  input  logic signed [W_C-1:0]     v_c,
  input  logic signed [EW-1:0]      e_c,
  output logic [31:0]               y_c,
  output logic                      overflow_c,
  // offset_update
  input  logic signed [MAXBITS-1:0] q,
  input  logic [31:0]               t,
  input  logic [FW-1:0]             il,
  input  logic [FW-1:0]             fl,
  input  logic                      stochastic,
  input  logic [5:0]                rbits,
  input  logic [31:0]               word,
  output logic signed [MAXBITS-1:0] q_next,
  output logic                      saturated,
  output logic                      kept
);

  int_to_fp32 #(.W(W_A), .EW(EW)) u_convert_a (.v(v_a), .e(e_a), .y(y_a), .overflow(overflow_a));
  int_to_fp32 #(.W(W_B), .EW(EW)) u_convert_b (.v(v_b), .e(e_b), .y(y_b), .overflow(overflow_b));
  int_to_fp32 #(.W(W_C), .EW(EW)) u_convert_c (.v(v_c), .e(e_c), .y(y_c), .overflow(overflow_c));
  offset_update #(.MAXBITS(MAXBITS)) u_update (.q, .t, .il, .fl, .stochastic, .rbits, .word, .q_next,
                                              .saturated, .kept);

endmodule
