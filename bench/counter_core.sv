// The simulator's limit for bench_rtl.py: a bare counter with cosim_core's bus, driven the same
// way (the same board bench, bridge and Etherbone). CONTROL.start keeps busy high for STEPS
// cycles while CYCLES counts them; STATUS, ID and CYCLES_LO/HI read as on the core; every other
// address reads 0. Reads answer two cycles after the request, like the core's.
/* verilator lint_off DECLFILENAME */  // it takes the real core's module name, to replace it
module cosim_core #(
    /* verilator lint_off UNUSEDPARAM */
    parameter int P = 16, parameter int LANES = 16, parameter int CMAX = 16, parameter int BMAX = 256
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
  logic [31:0] steps;
  logic [63:0] cycles, left;
  logic        done, rd1;
  logic [23:0] rd1_addr;

  always_ff @(posedge clk) begin
    if (rst) begin
      steps <= '0; cycles <= '0; left <= '0; busy <= 1'b0; done <= 1'b0; rd1 <= 1'b0; bus_rvalid <= 1'b0;
    end else begin
      if (bus_valid && bus_we && bus_addr == 24'h44) steps <= bus_wdata;
      if (bus_valid && bus_we && bus_addr == 24'h08 && bus_wdata[0] && !busy) begin
        busy <= steps != 0; done <= steps == 0; left <= 64'(steps); cycles <= '0;
      end else if (busy) begin
        cycles <= cycles + 64'd1;
        left <= left - 64'd1;
        if (left == 64'd1) begin
          busy <= 1'b0;
          done <= 1'b1;
        end
      end
      rd1 <= bus_valid && !bus_we;
      rd1_addr <= bus_addr;
      bus_rvalid <= rd1;
      case (rd1_addr)
        24'h00:  bus_rdata <= 32'h4353_494D;
        24'h0C:  bus_rdata <= {30'b0, done, busy};
        24'h98:  bus_rdata <= cycles[31:0];
        24'h9C:  bus_rdata <= cycles[63:32];
        default: bus_rdata <= '0;
      endcase
    end
  end
endmodule
