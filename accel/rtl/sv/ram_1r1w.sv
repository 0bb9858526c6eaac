// ram_1r1w: a simple dual-port memory, one write and one registered read per cycle, the
// pattern FPGA tools map to block RAM (Yosys: RAMB18E1/RAMB36E1 on 7-series).
//
//   we, waddr, wdata - written at the rising edge when we is high;
//   raddr            - sampled at the rising edge; rdata holds that word from then on (one
//                      cycle of latency). A read of the address written in the same cycle
//                      returns the old word.
// No reset: block RAM has none, so a design clears what it reads before writing it.
module ram_1r1w #(
  parameter int W     = 32,
  parameter int DEPTH = 1024,
  localparam int AW   = $clog2(DEPTH)
) (
  input  logic          clk,
  input  logic          we,
  input  logic [AW-1:0] waddr,
  input  logic [W-1:0]  wdata,
  input  logic [AW-1:0] raddr,
  output logic [W-1:0]  rdata
);
  logic [W-1:0] mem [DEPTH];

  always_ff @(posedge clk) begin
    if (we) mem[waddr] <= wdata;
    rdata <= mem[raddr];
  end
endmodule
