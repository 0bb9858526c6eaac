// The simulated FPGA board: cosim_core behind a burst bridge, for the cocotb bench
// accel/rtl/board.py. Simulation only (Verilator): not part of the synthesizable set.
//
// Python hands over a whole burst per simulator access instead of driving the bus per cycle:
// it sets op_we, op_addr (byte address of the first word), op_count (1..MAX_BURST) and, for a
// write, op_wdata (word i in bits [32*i +: 32]), then toggles go. The next rising edge takes
// the burst; the bridge issues one word per cycle to consecutive addresses (a read is
// pipelined and captured on bus_rvalid into op_rdata, laid out as op_wdata), and raises
// finished after the last word is written or captured. finished stays high until the next
// burst is taken. The op_* inputs must hold until finished. A toggle rather than a pulse: the
// bench changes go from any trigger (no clock-edge alignment) and never has to lower it.
module board_sim #(
    parameter int P = 16,
    parameter int LANES = 16,
    parameter int CMAX = 16,
    parameter int BMAX = 256
) (
    input  logic                  clk,
    input  logic                  rst,
    input  logic                  go,
    input  logic                  op_we,
    input  logic [23:0]           op_addr,
    input  logic [8:0]            op_count,
    input  logic [32*256-1:0]     op_wdata,
    output logic [32*256-1:0]     op_rdata,
    output logic                  finished,
    output logic                  busy
);
  logic go_seen;                 // go as of the last burst taken
  logic we;
  logic [23:0] base;
  logic [8:0] count;             // words in the burst
  logic [8:0] issued;            // words issued so far
  logic [8:0] got;               // words read back so far

  logic bus_valid;
  logic [23:0] bus_addr;
  logic [31:0] bus_wdata;
  logic bus_rvalid;
  logic [31:0] bus_rdata;

  assign bus_valid = issued != count;
  assign bus_addr = base + {13'd0, issued[7:0], 2'b00};
  assign bus_wdata = op_wdata[{issued[7:0], 5'd0} +: 32];

  always_ff @(posedge clk) begin
    if (rst) begin
      go_seen <= go;
      we <= 1'b0;
      base <= 24'd0;
      count <= 9'd0;
      issued <= 9'd0;
      got <= 9'd0;
      finished <= 1'b1;
    end else if (go != go_seen) begin
      go_seen <= go;
      we <= op_we;
      base <= op_addr;
      count <= op_count;
      issued <= 9'd0;
      got <= 9'd0;
      finished <= op_count == 9'd0;    // an empty burst is done at once
    end else begin
      if (bus_valid) begin
        issued <= issued + 9'd1;
        if (we && issued + 9'd1 == count) finished <= 1'b1;
      end
      if (bus_rvalid && !we && !finished) begin
        op_rdata[{got[7:0], 5'd0} +: 32] <= bus_rdata;
        got <= got + 9'd1;
        if (got + 9'd1 == count) finished <= 1'b1;
      end
    end
  end

  cosim_core #(
      .P(P),
      .LANES(LANES),
      .CMAX(CMAX),
      .BMAX(BMAX)
  ) core (
      .clk,
      .rst,
      .bus_valid,
      .bus_we(we),
      .bus_addr,
      .bus_wdata,
      .bus_rvalid,
      .bus_rdata,
      .busy
  );
endmodule
