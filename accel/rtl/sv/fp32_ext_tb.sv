// fp32_ext_tb: test toplevel for fp32_cmp, fp32_rint, fp32_ldexp and fp32_div.
//
// A simulation wrapper with one instance of each unit and a sequencer, so that a cocotb bench
// hands over BATCH cases per simulator access and the clock (running in C) does the rest:
//   - the bench writes op_a / op_b (case i in bits 32*i +: 32; op_b is n for ldexp), selects
//     a unit and pulses go;
//   - the sequencer applies case 0, 1, ... to that unit: one case per cycle for the
//     combinational units, one division after the other (each waiting for done) for fp32_div;
//   - each result goes to res_y (min for cmp) and res_z (max for cmp) and 4 flag bits per case
//     to res_flags: cmp {0, unordered, eq, lt}, div {overflow, invalid, div_by_zero, done};
//   - finished rises after the last case and stays high until the next go.
// While the sequencer is idle the divider is driven directly from the div_* ports, for the
// handshake tests.
module fp32_ext_tb #(
  parameter int BATCH = 512
) (
  input  logic                clk,
  input  logic                rst,
  input  logic [1:0]          unit,        // 0 cmp, 1 rint, 2 ldexp, 3 div
  input  logic                go,
  input  logic [32*BATCH-1:0] op_a,
  input  logic [32*BATCH-1:0] op_b,
  output logic [32*BATCH-1:0] res_y,
  output logic [32*BATCH-1:0] res_z,
  output logic [4*BATCH-1:0]  res_flags,
  output logic                finished,
  // fp32_div, driven directly while the sequencer is idle
  input  logic                div_start,
  input  logic [31:0]         div_a,
  input  logic [31:0]         div_b,
  output logic [31:0]         div_y,
  output logic                div_done,
  output logic                div_busy,
  output logic                div_div_by_zero,
  output logic                div_invalid,
  output logic                div_overflow
);

  localparam int IW = $clog2(BATCH + 1);
  localparam logic [1:0] CMP = 2'd0, RINT = 2'd1, LDEXP = 2'd2, DIV = 2'd3;

  logic          running;
  logic          div_wait;     // a division of the current case is under way
  logic [IW-1:0] idx;
  logic [31:0]   a, b;

  always_comb begin
    a = op_a[32*idx +: 32];
    b = op_b[32*idx +: 32];
  end

  logic        lt, eq, unordered;
  logic [31:0] min, max, rint_y, ldexp_y;

  fp32_cmp   u_cmp   (.a, .b, .lt, .eq, .unordered, .min, .max);
  fp32_rint  u_rint  (.a, .y(rint_y));
  fp32_ldexp u_ldexp (.a, .n(b), .y(ldexp_y));

  logic        start;
  logic [31:0] da, db;
  always_comb begin
    start = running ? (unit == DIV && !div_wait) : div_start;
    da    = running ? a : div_a;
    db    = running ? b : div_b;
  end

  fp32_div u_div (
    .clk, .rst, .start, .a(da), .b(db), .y(div_y), .done(div_done), .busy(div_busy),
    .div_by_zero(div_div_by_zero), .invalid(div_invalid), .overflow(div_overflow)
  );

  logic last;
  assign last = idx == IW'(BATCH - 1);

  always_ff @(posedge clk) begin
    if (rst) begin
      running  <= 1'b0;
      finished <= 1'b0;
      div_wait <= 1'b0;
      idx      <= '0;
    end else if (!running) begin
      if (go) begin
        running  <= 1'b1;
        finished <= 1'b0;
        div_wait <= 1'b0;
        idx      <= '0;
      end
    end else if (unit != DIV) begin
      case (unit)
        CMP: begin
          res_y[32*idx +: 32]    <= min;
          res_z[32*idx +: 32]    <= max;
          res_flags[4*idx +: 4]  <= {1'b0, unordered, eq, lt};
        end
        RINT:    res_y[32*idx +: 32] <= rint_y;
        LDEXP:   res_y[32*idx +: 32] <= ldexp_y;
        default: ;                       // DIV: the branch below
      endcase
      idx <= idx + 1'b1;
      if (last) begin
        running  <= 1'b0;
        finished <= 1'b1;
      end
    end else if (!div_wait) begin
      div_wait <= 1'b1;                  // start was high: the divider takes the case now
    end else if (div_done) begin
      res_y[32*idx +: 32]   <= div_y;
      res_flags[4*idx +: 4] <= {div_overflow, div_invalid, div_div_by_zero, 1'b1};
      div_wait <= 1'b0;
      idx      <= idx + 1'b1;
      if (last) begin
        running  <= 1'b0;
        finished <= 1'b1;
      end
    end
  end

endmodule
