// A stand-in for cosim_core with its bus contract, for the board tests (test_board.py):
// the ID register, STEPS, CONTROL.start, STATUS, and an 8192-word RAM at the DATA window.
// A start keeps busy high for STEPS * 1000 cycles, then sets done. Other addresses read 0.
// Reads answer exactly two cycles after the request; writes take effect in their cycle.
/* verilator lint_off DECLFILENAME */  // a stand-in: it takes the real core's module name
module cosim_core #(
    // The real core's build parameters: the stub only keeps the port list and parameters.
    /* verilator lint_off UNUSEDPARAM */
    parameter int P = 16,
    parameter int LANES = 16,
    parameter int CMAX = 16,
    parameter int BMAX = 256
    /* verilator lint_on UNUSEDPARAM */
) (
    input  logic        clk,
    input  logic        rst,
    input  logic        bus_valid,
    input  logic        bus_we,
    input  logic [23:0] bus_addr,
    input  logic [31:0] bus_wdata,
    output logic        bus_rvalid,
    output logic [31:0] bus_rdata,
    output logic        busy
);
  localparam logic [23:0] ADDR_ID = 24'h00_0000;
  localparam logic [23:0] ADDR_CONTROL = 24'h00_0008;
  localparam logic [23:0] ADDR_STATUS = 24'h00_000C;
  localparam logic [23:0] ADDR_STEPS = 24'h00_0044;
  localparam logic [31:0] ID_MAGIC = 32'h4353_494D;  // "CSIM"
  localparam int unsigned RAM_WORDS = 8192;

  logic [31:0] ram[RAM_WORDS];
  logic [31:0] steps;
  logic [41:0] left;                 // cycles of the current run still to go
  logic done;
  logic rd_valid;                    // read pipeline, stage 1
  logic [23:0] rd_addr;

  // The DATA window is 0x100000..0x1FFFFF; the stub backs its first 8192 words.
  function automatic logic in_ram(input logic [23:15] a);
    in_ram = a == 9'b0001_00000;
  endfunction

  always_ff @(posedge clk) begin
    if (rst) begin
      steps <= 32'd0;
      left <= 42'd0;
      busy <= 1'b0;
      done <= 1'b0;
      rd_valid <= 1'b0;
      bus_rvalid <= 1'b0;
    end else begin
      rd_valid <= bus_valid && !bus_we;
      rd_addr <= bus_addr;
      bus_rvalid <= rd_valid;
      if (bus_valid && bus_we) begin
        if (in_ram(bus_addr[23:15])) ram[bus_addr[14:2]] <= bus_wdata;
        if (bus_addr == ADDR_STEPS) steps <= bus_wdata;
      end
      if (bus_valid && bus_we && bus_addr == ADDR_CONTROL && bus_wdata[0]) begin
        left <= 42'(steps) * 42'd1000;
        busy <= steps != 32'd0;
        done <= steps == 32'd0;
      end else if (busy) begin
        left <= left - 42'd1;
        if (left == 42'd1) begin
          busy <= 1'b0;
          done <= 1'b1;
        end
      end
    end
  end

  always_ff @(posedge clk) begin
    if (in_ram(rd_addr[23:15])) bus_rdata <= ram[rd_addr[14:2]];
    else if (rd_addr == ADDR_ID) bus_rdata <= ID_MAGIC;
    else if (rd_addr == ADDR_STATUS) bus_rdata <= {29'd0, 1'b0, done, busy};
    else if (rd_addr == ADDR_STEPS) bus_rdata <= steps;
    else bus_rdata <= 32'd0;
  end
endmodule
