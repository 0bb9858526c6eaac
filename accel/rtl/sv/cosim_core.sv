// cosim_core: the kernels of kernel spec v2 (docs/accelerator.md), `svrg` and `sgd` for the
// linear, logistic and softmax problems, bit-exact with accel.backends.emulated.
//
// A run (CONTROL.start) executes STEPS inner steps of epoch EPOCH on the data, offset and
// anchor held in the windows of the register map (accel/rtl/regmap.py, docs/rtl.md). Each step:
//   GATHER  the batch's sample indices from ORDER (an index >= N_SAMPLES stops the run, ERROR
//           config);
//   DOT     per batch row i and output c, the exact dot x_i . v (v = q - q_a for svrg, q for
//           sgd) on P multiply-accumulate lanes, one chunk of P features per cycle, into a
//           48-bit register; then int_to_fp32 (step 3's R) into the D scratch;
//   RESP    per row, the response program of the microcode (step 4) into the R scratch;
//   UPD     per offset element (f, c) in row-major order, the update program (steps 5-7: the
//           batch gradient, u, t) ending in `update`: offset_update with this element's
//           random word (lane e mod RNG_LANES), q written back, saturations counted, the
//           update statistics taken (UPDATES, VANISHED, UPDATE_MIN/MAX and a counter per binade
//           of t, read off its exponent field). A NaN t stops the run (ERROR nan_update); the
//           driver restores q.
// The microcode (accel/rtl/microcode.py, ROM in cosim_ucode_pkg) runs on one sequencer with
// one binary32 unit of each kind: 3 cycles per instruction, 30 for a divide.
//
// Bus: one request per cycle, always accepted. Writes take effect at once; a read returns its
// word with bus_rvalid exactly 2 cycles after the request. While busy, the windows belong to
// the kernel: window writes are ignored and window reads return 0; configuration writes are
// ignored too (registers stay readable, for polling).
//
// Exact-dot width: |x| < 2^15 and |q - q_a| < 2^16, so each product is below 2^31 and a sum
// of up to 2^16 of them fits the 48-bit register: the dot is exact for every configuration
// the windows hold (at most 4096 features).
module cosim_core #(
  parameter int P     = 16,    // dot lanes (a power of two)
  parameter int LANES = 16,    // random-bit lanes
  parameter int CMAX  = 16,    // largest N_OUTPUTS (a power of two)
  parameter int BMAX  = 256    // largest BATCH (a power of two)
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
  // ---------------------------------------------------------------- sizes
  localparam int PW = $clog2(P);
  localparam int CW = $clog2(CMAX);
  localparam int BW = $clog2(BMAX);
  localparam int JW = BW + 1;                                      // j counts up to BMAX
  localparam int MAXBITS = 16;
  localparam int DATA_WORDS = cosim_regs_pkg::MEM_DATA_WORDS;
  localparam int Q_WORDS = cosim_regs_pkg::MEM_OFFSET_Q_WORDS;
  localparam int AT_WORDS = cosim_regs_pkg::MEM_ANCHOR_TERMS_WORDS;
  localparam int ORD_WORDS = cosim_regs_pkg::MEM_ORDER_WORDS;
  localparam int TGT_WORDS = cosim_regs_pkg::MEM_TARGETS_WORDS;
  localparam int GT_WORDS = cosim_regs_pkg::MEM_G_TILDE_WORDS;
  localparam int DROWS = DATA_WORDS / P;
  localparam int QROWS = Q_WORDS / P;
  localparam int QAW = $clog2(Q_WORDS);
  localparam int AAW = $clog2(AT_WORDS);
  localparam int OAW = $clog2(ORD_WORDS);
  localparam int TAW = $clog2(TGT_WORDS);
  localparam int DRW = $clog2(DROWS);
  localparam int QRW = $clog2(QROWS);
  localparam int SCW = BW + CW;                                    // scratch index {row, output}
  localparam int NCNT = 14;
  // counter indices, in register-map order from STEPS_DONE_LO
  localparam int C_STEPS = 0, C_SAT = 1, C_RNG = 2, C_CYC = 3, C_ADD = 4, C_MUL = 5, C_DIV = 6,
                 C_LDEXP = 7, C_RINT = 8, C_CMP = 9, C_ROUND = 10, C_MAC = 11, C_UPD = 12, C_VAN = 13;
  localparam int NBIN = cosim_regs_pkg::MEM_UPDATE_BINADES_WORDS;
  localparam int BINW = $clog2(NBIN);
  localparam int SH_BIN = $clog2(NBIN * 4);
  localparam logic [30:0] NO_MIN = 31'h7F80_0000;                   // +inf: no t != 0 yet
  localparam logic [31:0] ONE = 32'h3F80_0000;

  // ---------------------------------------------------------------- configuration registers
  logic [31:0] r_offset_fmt, r_data_fmt, r_mode, r_scale, r_alpha, r_lambda, r_seed_lo, r_seed_hi,
               r_epoch, r_steps, r_batch, r_n_samples, r_n_features, r_n_outputs, r_rng_lanes;
  logic [3:0]  err_code;
  logic [31:0] err_step;
  logic        st_busy, st_done, st_error;
  logic [63:0] cnt [NCNT];
  logic [31:0] hi_latch [NCNT];

  assign busy = st_busy;

  // Decoded configuration (valid while busy: written only while idle).
  logic [4:0]  ob, of, df;              // offset width and fraction, data fraction
  logic [1:0]  problem;
  logic        svrg, stochastic;
  logic [5:0]  rbits;
  logic [12:0] n_feat;                  // 1 .. 4096
  logic [CW:0] n_out;                   // 1 .. CMAX
  logic [BW:0] batch;
  logic [16:0] lanes_used;
  logic [12:0] chunks;                  // ceil(F / P)
  logic [12:0] f_pad;                   // chunks * P
  always_comb begin
    ob = r_offset_fmt[4:0];  of = r_offset_fmt[12:8];
    df = r_data_fmt[12:8];
    problem = r_mode[1:0];
    svrg = r_mode[4];
    stochastic = r_mode[8];
    rbits = r_mode[21:16];
    n_feat = r_n_features[12:0];
    n_out = r_n_outputs[CW:0];
    batch = r_batch[BW:0];
    lanes_used = r_rng_lanes[16:0];
    chunks = 13'((r_n_features[12:0] + 13'(P - 1)) >> PW);
    f_pad = 13'(chunks << PW);
  end

  // The checks of a start (accel.rtl.model.check_config says the same).
  logic config_ok;
  always_comb begin
    config_ok = r_offset_fmt[7:0] >= 8'd1 && r_offset_fmt[7:0] <= 8'd16 && r_offset_fmt[15:8] < r_offset_fmt[7:0]
      && r_data_fmt[7:0] >= 8'd1 && r_data_fmt[7:0] <= 8'd16 && r_data_fmt[15:8] < r_data_fmt[7:0]
      && r_mode[1:0] <= 2'd2 && r_mode[21:16] <= 6'd32
      && r_n_outputs >= 32'd1 && r_n_outputs <= 32'(CMAX)
      && r_batch >= 32'd1 && r_batch <= 32'(BMAX)
      && r_n_features >= 32'd1 && r_n_features <= 32'(Q_WORDS) && r_n_samples >= 32'd1
      && r_n_samples <= 32'(AT_WORDS)
      && 64'(f_pad) * 64'(r_n_outputs) <= 64'(Q_WORDS)
      && 64'(r_n_samples) * 64'(f_pad) <= 64'(DATA_WORDS)
      && 64'(r_n_samples) * 64'(r_n_outputs) <= 64'(AT_WORDS)
      && 64'(r_steps) * 64'(r_batch) <= 64'(ORD_WORDS)
      && r_rng_lanes >= 32'd1 && r_rng_lanes <= 32'(LANES);
  end

  // ---------------------------------------------------------------- bus decode
  logic bus_wr, bus_rd;
  assign bus_wr = bus_valid && bus_we;
  assign bus_rd = bus_valid && !bus_we;

  // A window is a naturally aligned power of two: one compare of the address's top bits.
  localparam int SH_DATA = $clog2(DATA_WORDS * 4), SH_Q = $clog2(Q_WORDS * 4),
                 SH_GT = $clog2(GT_WORDS * 4), SH_AT = $clog2(AT_WORDS * 4),
                 SH_ORD = $clog2(ORD_WORDS * 4), SH_TGT = $clog2(TGT_WORDS * 4);
  function automatic logic [6:0] windows(input logic [23:0] a);   // {tgt, ord, at, gt, qa, q, data}
    windows = {32'(a) >> SH_TGT == cosim_regs_pkg::MEM_TARGETS_BASE >> SH_TGT,
               32'(a) >> SH_ORD == cosim_regs_pkg::MEM_ORDER_BASE >> SH_ORD,
               32'(a) >> SH_AT == cosim_regs_pkg::MEM_ANCHOR_TERMS_BASE >> SH_AT,
               32'(a) >> SH_GT == cosim_regs_pkg::MEM_G_TILDE_BASE >> SH_GT,
               32'(a) >> SH_Q == cosim_regs_pkg::MEM_ANCHOR_Q_BASE >> SH_Q,
               32'(a) >> SH_Q == cosim_regs_pkg::MEM_OFFSET_Q_BASE >> SH_Q,
               32'(a) >> SH_DATA == cosim_regs_pkg::MEM_DATA_BASE >> SH_DATA};
  endfunction

  logic w_data, w_q, w_qa, w_gt, w_at, w_ord, w_tgt;
  logic [21:0] widx;                    // word index within a window
  always_comb begin
    {w_tgt, w_ord, w_at, w_gt, w_qa, w_q, w_data} = windows(bus_addr);
    widx = bus_addr[23:2];
  end

  logic ctl_start, ctl_reset, ctl_soft;
  assign ctl_start = bus_wr && bus_addr == cosim_regs_pkg::ADDR_CONTROL[23:0] && bus_wdata[0];
  assign ctl_reset = bus_wr && bus_addr == cosim_regs_pkg::ADDR_CONTROL[23:0] && bus_wdata[1];
  assign ctl_soft  = bus_wr && bus_addr == cosim_regs_pkg::ADDR_CONTROL[23:0] && bus_wdata[2];

  // ---------------------------------------------------------------- kernel state (declared early)
  typedef enum logic [4:0] {
    S_IDLE, S_INIT, S_GATHER_ISSUE, S_GATHER_TAKE, S_DOT, S_DOT_LAST, S_DOT_CONV, S_ROW_ISSUE,
    S_ROW_TAKE, S_RESP, S_ROW_NEXT, S_UPD_ISSUE, S_UPD_TAKE, S_UPD, S_UPD_NEXT, S_STEP_END
  } state_t;
  typedef enum logic [2:0] {Q_IDLE, Q_FETCH, Q_READ, Q_EXEC, Q_DIV} seq_t;
  state_t state, prog_next;
  seq_t   sq;

  logic [31:0] step, ord_base;
  logic [BW:0] gi, bi;                  // gather index; batch row i
  logic [CW:0] oc;                      // output c (DOT and UPD)
  logic [12:0] fi;                      // feature f (UPD)
  logic [12:0] dk;                      // dot chunk issued
  logic        dvalid;                  // a chunk's words are on the RAM outputs
  logic signed [47:0] acc;
  logic [15:0] nidx [BMAX];             // the batch's sample indices
  logic [DRW-1:0] xrow [BMAX];          // their first data row: n * chunks
  logic [QRW-1:0] qrow_c;               // c * chunks
  logic [QAW-1:0] gt_c;                 // c * F_pad
  logic [AAW:0]   at_base;              // n_i * C
  logic [31:0] tgt_word, gt_word;
  logic signed [15:0] q_code, qa_code;
  logic [16:0] lane;                    // lane of the element in hand
  logic [12:0] e_left;                  // elements of this step not yet updated, this one included
  logic [7:0]  pc, loop_pc;
  logic [JW-1:0] j, loop_bound;
  logic        flag;
  logic [cosim_ucode_pkg::WORD_BITS-1:0] ins;
  logic [31:0] a_v, b_v;
  logic [31:0] rf [cosim_ucode_pkg::N_REGISTERS];
  logic [31:0] vf [cosim_ucode_pkg::N_VECTORS][CMAX];

  logic phase_dot;
  assign phase_dot = state == S_DOT || state == S_DOT_LAST;

  // ---------------------------------------------------------------- memories
  logic [15:0]     d_rdata [P];
  logic [15:0]     q_rdata [P];
  logic [15:0]     qa_rdata [P];
  logic [DRW-1:0]  d_raddr;
  logic [QRW-1:0]  q_raddr;
  logic [QRW-1:0]  upd_row;
  logic            q_we_k;              // the kernel writes q
  logic [15:0]     q_wdata_k;

  always_comb begin
    if (!st_busy)       d_raddr = DRW'(widx >> PW);
    else if (phase_dot) d_raddr = DRW'(xrow[bi[BW-1:0]] + DRW'(dk));
    else                d_raddr = DRW'(xrow[j[BW-1:0]] + DRW'(fi >> PW));
    if (!st_busy)       q_raddr = QRW'(widx >> PW);
    else if (phase_dot) q_raddr = QRW'(qrow_c + QRW'(dk));
    else                q_raddr = upd_row;
  end
  assign upd_row = QRW'(qrow_c + QRW'(fi >> PW));

  for (genvar l = 0; l < P; l++) begin : g_bank
    logic [PW-1:0] bank_id;
    logic bus_here;
    assign bank_id = PW'(l);
    assign bus_here = !st_busy && bus_wr && widx[PW-1:0] == bank_id;
    ram_1r1w #(.W(16), .DEPTH(DROWS)) u_data (
      .clk, .we(bus_here && w_data), .waddr(DRW'(widx >> PW)), .wdata(bus_wdata[15:0]),
      .raddr(d_raddr), .rdata(d_rdata[l]));
    ram_1r1w #(.W(16), .DEPTH(QROWS)) u_q (
      .clk, .we(st_busy ? (q_we_k && fi[PW-1:0] == bank_id) : (bus_here && w_q)),
      .waddr(st_busy ? upd_row : QRW'(widx >> PW)), .wdata(st_busy ? q_wdata_k : bus_wdata[15:0]),
      .raddr(q_raddr), .rdata(q_rdata[l]));
    ram_1r1w #(.W(16), .DEPTH(QROWS)) u_qa (
      .clk, .we(bus_here && w_qa), .waddr(QRW'(widx >> PW)), .wdata(bus_wdata[15:0]),
      .raddr(q_raddr), .rdata(qa_rdata[l]));
  end

  logic [31:0] gt_rdata, at_rdata, tgt_rdata, ds_rdata, rs_rdata;
  logic [15:0] ord_rdata;
  logic        ds_we, rs_we;
  logic [SCW-1:0] ds_waddr, rs_waddr;
  logic [31:0] ds_wdata, rs_wdata;
  logic bus_idle_wr;
  assign bus_idle_wr = !st_busy && bus_wr;

  ram_1r1w #(.W(32), .DEPTH(GT_WORDS)) u_gt (
    .clk, .we(bus_idle_wr && w_gt), .waddr(QAW'(widx)), .wdata(bus_wdata),
    .raddr(st_busy ? QAW'(gt_c + QAW'(fi)) : QAW'(widx)), .rdata(gt_rdata));
  ram_1r1w #(.W(32), .DEPTH(AT_WORDS)) u_at (
    .clk, .we(bus_idle_wr && w_at), .waddr(AAW'(widx)), .wdata(bus_wdata),
    .raddr(st_busy ? AAW'(at_base + (AAW + 1)'(j)) : AAW'(widx)), .rdata(at_rdata));
  ram_1r1w #(.W(16), .DEPTH(ORD_WORDS)) u_ord (
    .clk, .we(bus_idle_wr && w_ord), .waddr(OAW'(widx)), .wdata(bus_wdata[15:0]),
    .raddr(st_busy ? OAW'(ord_base + 32'(gi)) : OAW'(widx)), .rdata(ord_rdata));
  ram_1r1w #(.W(32), .DEPTH(TGT_WORDS)) u_tgt (
    .clk, .we(bus_idle_wr && w_tgt), .waddr(TAW'(widx)), .wdata(bus_wdata),
    .raddr(st_busy ? TAW'(nidx[bi[BW-1:0]]) : TAW'(widx)), .rdata(tgt_rdata));
  // D and R scratch: {row, output}; RESP reads D[i, j] and writes R[i, j], UPD reads R[j, c].
  ram_1r1w #(.W(32), .DEPTH(BMAX * CMAX)) u_ds (
    .clk, .we(ds_we), .waddr(ds_waddr), .wdata(ds_wdata),
    .raddr({bi[BW-1:0], j[CW-1:0]}), .rdata(ds_rdata));
  ram_1r1w #(.W(32), .DEPTH(BMAX * CMAX)) u_rs (
    .clk, .we(rs_we), .waddr(rs_waddr), .wdata(rs_wdata),
    .raddr({j[BW-1:0], oc[CW-1:0]}), .rdata(rs_rdata));

  // ---------------------------------------------------------------- the exact dot
  logic signed [47:0] chunk_sum;
  logic signed [16:0] dot_v [P];        // v of each lane: q - q_a (svrg) or q
  always_comb begin
    chunk_sum = '0;
    for (int l = 0; l < P; l++) begin
      dot_v[l] = svrg ? (17'($signed(q_rdata[l])) - 17'($signed(qa_rdata[l]))) : 17'($signed(q_rdata[l]));
      chunk_sum = chunk_sum + 48'($signed(d_rdata[l])) * 48'(dot_v[l]);
    end
  end
  logic [31:0] dot_fp;
  /* verilator lint_off PINCONNECTEMPTY */
  int_to_fp32 #(.W(48), .EW(10)) u_dot_cvt (.v(acc), .e(-(10'(df) + 10'(of))), .y(dot_fp), .overflow());
  /* verilator lint_on PINCONNECTEMPTY */

  // ---------------------------------------------------------------- the random words
  logic [LANES-1:0]    rng_next;
  logic                rng_ready, rng_start;
  logic [LANES*32-1:0] rng_words;
  lane_rng #(.LANES(LANES)) u_rng (
    .clk, .rst, .seed({r_seed_hi, r_seed_lo}), .epoch(r_epoch[15:0]), .start(rng_start),
    .next(rng_next), .ready(rng_ready), .words(rng_words));

  // ---------------------------------------------------------------- the binary32 units
  logic [4:0] op;
  logic [1:0] dsp, asp, bsp;
  logic [4:0] didx, aidx, bidx;
  assign op = ins[4:0];
  assign dsp = ins[8:7];  assign didx = ins[13:9];
  assign asp = ins[15:14]; assign aidx = ins[20:16];
  assign bsp = ins[22:21]; assign bidx = ins[27:23];

  // An integer-valued binary32 n (|n| small: an exponent shift) as a signed integer; beyond
  // +-2^15 it saturates, which changes no ldexp result (underflow or overflow either way).
  function automatic logic signed [31:0] small_int(input logic [31:0] x);
    logic [7:0]  ex;
    logic [31:0] m;
    ex = x[30:23];
    if (ex < 8'd127)      m = '0;
    else if (ex > 8'd142) m = 32'd32768;
    else                  m = 32'({1'b1, x[22:0]}) >> (8'd150 - ex);
    small_int = x[31] ? -(32'(m)) : 32'(m);
  endfunction

  // An integer |v| < 2^17 times 2^e as binary32, exact (at most 18 significant bits).
  function automatic logic [31:0] exact_fp32(input logic signed [17:0] v, input logic signed [7:0] e);
    logic [17:0] mag;
    logic [4:0]  top;
    logic [22:0] man;
    logic [7:0]  ex;
    mag = v[17] ? 18'(-v) : 18'(v);
    top = '0;
    for (int b = 0; b < 18; b++) if (mag[b]) top = 5'(b);
    man = 23'(({5'b0, mag} << (23 - 32'(top))));
    ex = 8'(8'sd127 + e + 8'(top));
    exact_fp32 = (mag == '0) ? 32'h0 : {v[17], ex, man};
  endfunction

  logic [31:0] add_y, mul_y, ldexp_y, rint_y, cmp_min, cmp_max, div_y;
  logic        cmp_lt, div_done, div_start;
  logic        is_sub, is_gt;
  assign is_sub = op == cosim_ucode_pkg::OP_SUB;
  assign is_gt = op == cosim_ucode_pkg::OP_CMPGT;
  /* verilator lint_off PINCONNECTEMPTY */
  fp32_add   u_add (.a(a_v), .b(b_v), .sub(is_sub), .y(add_y), .overflow(), .invalid());
  fp32_mul   u_mul (.a(a_v), .b(b_v), .y(mul_y), .overflow(), .invalid());
  fp32_ldexp u_ldexp (.a(a_v), .n(small_int(b_v)), .y(ldexp_y));
  fp32_rint  u_rint (.a(a_v), .y(rint_y));
  fp32_cmp   u_cmp (.a(is_gt ? b_v : a_v), .b(is_gt ? a_v : b_v), .lt(cmp_lt), .eq(), .unordered(),
                    .min(cmp_min), .max(cmp_max));
  fp32_div   u_div (.clk, .rst, .start(div_start), .a(a_v), .b(b_v), .y(div_y), .done(div_done),
                    .busy(), .div_by_zero(), .invalid(), .overflow());
  /* verilator lint_on PINCONNECTEMPTY */

  // step 7 for the element in hand
  logic [31:0]        rng_word;
  logic signed [15:0] q_next;
  logic               saturated, kept;
  assign rng_word = rng_words[32 * lane[$clog2(LANES+1)-1:0] +: 32];
  offset_update #(.MAXBITS(MAXBITS)) u_update (
    .q(q_code), .t(a_v), .il(5'(ob - of)), .fl(of), .stochastic, .rbits, .word(rng_word),
    .q_next, .saturated, .kept);

  // The update statistics of the element in hand (docs/accelerator.md, "Update statistics"):
  // t' = t with |t| clamped to 2^(IL+1) as step 7 clamps it (+-inf too; a NaN stops the run),
  // compared as magnitude bits (fp32 magnitudes order as integers), and its binade of the grid,
  // floor(log2|t'|) + FL, read off the exponent field. A subnormal t' lies far below
  // BINADE_FLOOR for every FL <= 16: it counts in the lowest binade, as every binade below.
  localparam logic signed [9:0] FLOOR_B = 10'(cosim_regs_pkg::BINADE_FLOOR);
  logic [7:0]        top_exp;             // the biased exponent of 2^(IL+1)
  logic [30:0]       t_mag;               // |t'|
  logic              t_nonzero;
  logic signed [9:0] t_binade;            // floor(log2|t'|) + FL, for a normal t'
  logic [BINW-1:0]   t_bin;               // its counter
  logic [30:0]       u_min, u_max;
  logic [31:0]       binade_cnt [NBIN];
  always_comb begin
    top_exp = 8'd128 + 8'(ob - of);
    t_mag = (a_v[30:23] >= top_exp) ? {top_exp, 23'd0} : a_v[30:0];
    t_nonzero = a_v[30:0] != '0;
    t_binade = $signed({2'b00, t_mag[30:23]}) - 10'sd127 + $signed({5'b0, of});
    t_bin = (t_mag[30:23] == 8'd0 || t_binade < FLOOR_B) ? '0 : BINW'(t_binade - FLOOR_B);
  end

  // ---------------------------------------------------------------- operands
  logic [31:0] resp_hi;
  logic [3:0]  log2c;                   // ceil(log2 C)
  always_comb begin
    log2c = '0;
    for (int b = 0; b < 8; b++) if ((32'(n_out) - 1) >> b != 0) log2c = 4'(b + 1);
    resp_hi = cosim_ucode_pkg::response_hi(log2c);
  end

  function automatic logic [31:0] stream(input logic [4:0] s);
    case (s)
      cosim_ucode_pkg::S_D:   stream = ds_rdata;
      cosim_ucode_pkg::S_P:   stream = at_rdata;
      cosim_ucode_pkg::S_Y:   stream = tgt_word;
      cosim_ucode_pkg::S_HOT: stream = (tgt_word == 32'(j)) ? ONE : 32'h0;
      cosim_ucode_pkg::S_X:   stream = exact_fp32(18'($signed(d_rdata[fi[PW-1:0]])), -(8'(df)));
      cosim_ucode_pkg::S_R:   stream = rs_rdata;
      cosim_ucode_pkg::S_DQ:  stream = exact_fp32(18'(q_code) - 18'(qa_code), -(8'(of)));
      cosim_ucode_pkg::S_Q:   stream = exact_fp32(18'(q_code), -(8'(of)));
      cosim_ucode_pkg::S_GT:  stream = gt_word;
      cosim_ucode_pkg::S_B:   stream = exact_fp32(18'(batch), 8'd0);
      cosim_ucode_pkg::S_RHI: stream = resp_hi;
      default:                stream = '0;
    endcase
  endfunction

  function automatic logic [31:0] operand(input logic [1:0] space, input logic [4:0] idx);
    case (space)
      2'd0:    operand = rf[idx];
      2'd1:    operand = vf[idx[0]][j[CW-1:0]];
      2'd2:    operand = cosim_ucode_pkg::konst(idx);
      default: operand = stream(idx);
    endcase
  endfunction

  logic [31:0] result;
  always_comb begin
    case (op)
      cosim_ucode_pkg::OP_ADD, cosim_ucode_pkg::OP_SUB: result = add_y;
      cosim_ucode_pkg::OP_MUL:   result = mul_y;
      cosim_ucode_pkg::OP_DIV:   result = div_y;
      cosim_ucode_pkg::OP_LDEXP: result = ldexp_y;
      cosim_ucode_pkg::OP_RINT:  result = rint_y;
      cosim_ucode_pkg::OP_MAX:   result = cmp_max;
      cosim_ucode_pkg::OP_MIN:   result = cmp_min;
      cosim_ucode_pkg::OP_NEG:   result = {~a_v[31], a_v[30:0]};
      cosim_ucode_pkg::OP_ABS:   result = {1'b0, a_v[30:0]};
      cosim_ucode_pkg::OP_SEL:   result = flag ? a_v : b_v;
      default:                   result = a_v;                // mov
    endcase
  end

  // The counter an op counts in (NCNT: none).
  function automatic int op_counter(input logic [4:0] o);
    case (o)
      cosim_ucode_pkg::OP_ADD, cosim_ucode_pkg::OP_SUB: op_counter = C_ADD;
      cosim_ucode_pkg::OP_MUL:   op_counter = C_MUL;
      cosim_ucode_pkg::OP_DIV:   op_counter = C_DIV;
      cosim_ucode_pkg::OP_LDEXP: op_counter = C_LDEXP;
      cosim_ucode_pkg::OP_RINT:  op_counter = C_RINT;
      cosim_ucode_pkg::OP_MAX, cosim_ucode_pkg::OP_MIN, cosim_ucode_pkg::OP_CMPLT,
      cosim_ucode_pkg::OP_CMPGT: op_counter = C_CMP;
      default:                   op_counter = NCNT;
    endcase
  endfunction

  logic cond_ok;
  always_comb begin
    case (ins[6:5])
      2'd0:    cond_ok = 1'b1;
      2'd1:    cond_ok = batch > 1;
      2'd2:    cond_ok = j == '0;
      default: cond_ok = j != '0;
    endcase
  end

  // The ROM word at pc, decoded for the fetch cycle.
  logic [cosim_ucode_pkg::WORD_BITS-1:0] fw;
  logic [JW-1:0] fbound;
  assign fw = cosim_ucode_pkg::rom(pc);
  assign fbound = fw[23] ? JW'(batch) : JW'(n_out);

  function automatic logic [7:0] resp_entry(input logic is_svrg, input logic [1:0] prob);
    case ({is_svrg, prob})
      3'b000:  resp_entry = cosim_ucode_pkg::ENTRY_RESP_SGD_LINEAR;
      3'b001:  resp_entry = cosim_ucode_pkg::ENTRY_RESP_SGD_LOGISTIC;
      3'b010:  resp_entry = cosim_ucode_pkg::ENTRY_RESP_SGD_SOFTMAX;
      3'b100:  resp_entry = cosim_ucode_pkg::ENTRY_RESP_SVRG_LINEAR;
      3'b101:  resp_entry = cosim_ucode_pkg::ENTRY_RESP_SVRG_LOGISTIC;
      default: resp_entry = cosim_ucode_pkg::ENTRY_RESP_SVRG_SOFTMAX;
    endcase
  endfunction

  // ---------------------------------------------------------------- the kernel
  logic [12:0] fc;                      // F * C (at most 4096 once the configuration passed)
  assign fc = 13'(32'(n_feat) * 32'(n_out));

  always_comb begin
    // Lanes this element's round advances: the lanes in use, but no more than elements remain.
    for (int l = 0; l < LANES; l++)
      rng_next[l] = state == S_UPD_ISSUE && stochastic && rng_ready && lane == '0
                    && 17'(l) < lanes_used && 13'(l) < e_left;
  end

  always_ff @(posedge clk) begin
    div_start <= 1'b0;
    ds_we <= 1'b0;
    rs_we <= 1'b0;
    q_we_k <= 1'b0;
    rng_start <= 1'b0;
    if (rst || ctl_reset || ctl_soft) begin
      st_busy <= 1'b0; st_done <= 1'b0; st_error <= 1'b0;
      err_code <= '0; err_step <= '0;
      state <= S_IDLE; sq <= Q_IDLE;
      for (int k = 0; k < NCNT; k++) cnt[k] <= '0;
      u_min <= NO_MIN; u_max <= '0;
      for (int k = 0; k < NBIN; k++) binade_cnt[k] <= '0;
    end else begin
      if (st_busy) cnt[C_CYC] <= cnt[C_CYC] + 64'd1;
      // -------- the sequencer
      case (sq)
        Q_FETCH: begin
          case (fw[4:0])
            cosim_ucode_pkg::OP_END: begin
              sq <= Q_IDLE;
              state <= prog_next;
            end
            cosim_ucode_pkg::OP_LOOP: begin
              j <= JW'(fw[16]);
              loop_pc <= pc;
              loop_bound <= fbound;
              pc <= (JW'(fw[16]) >= fbound) ? pc + 8'(fw[13:7]) + 8'd1 : pc + 8'd1;
            end
            cosim_ucode_pkg::OP_NEXT: begin
              if (j + 1'b1 < loop_bound) begin
                j <= j + 1'b1;
                pc <= loop_pc + 8'd1;
              end else begin
                pc <= pc + 8'd1;
              end
            end
            default: begin
              ins <= fw;
              sq <= Q_READ;
            end
          endcase
        end
        Q_READ: begin
          if (!cond_ok) begin
            pc <= pc + 8'd1;
            sq <= Q_FETCH;
          end else begin
            a_v <= operand(asp, aidx);
            b_v <= operand(bsp, bidx);
            sq <= Q_EXEC;
          end
        end
        Q_EXEC, Q_DIV: begin
          if (op == cosim_ucode_pkg::OP_DIV && sq == Q_EXEC) begin
            div_start <= 1'b1;
            sq <= Q_DIV;
          end else if (sq == Q_DIV && !div_done) begin
            sq <= Q_DIV;                                  // waiting for the divider
          end else if (op == cosim_ucode_pkg::OP_UPDATE) begin
            if (a_v[30:23] == 8'hFF && a_v[22:0] != '0) begin   // a NaN step: stop
              st_busy <= 1'b0; st_error <= 1'b1;
              err_code <= 4'd2; err_step <= step;
              state <= S_IDLE; sq <= Q_IDLE;
            end else begin
              q_we_k <= 1'b1;
              q_wdata_k <= q_next;
              cnt[C_SAT] <= cnt[C_SAT] + 64'(saturated);
              cnt[C_RNG] <= cnt[C_RNG] + 64'(stochastic);
              cnt[C_UPD] <= cnt[C_UPD] + 64'd1;
              if (t_nonzero) begin
                cnt[C_VAN] <= cnt[C_VAN] + 64'(kept);
                if (t_mag < u_min) u_min <= t_mag;
                if (t_mag > u_max) u_max <= t_mag;
                binade_cnt[t_bin] <= binade_cnt[t_bin] + 32'd1;
              end
              pc <= pc + 8'd1;
              sq <= Q_FETCH;
            end
          end else begin
            if (op == cosim_ucode_pkg::OP_CMPLT || op == cosim_ucode_pkg::OP_CMPGT) flag <= cmp_lt;
            else if (dsp == 2'd0) rf[didx] <= result;
            else if (dsp == 2'd1) vf[didx[0]][j[CW-1:0]] <= result;
            else begin
              rs_we <= 1'b1;
              rs_waddr <= {bi[BW-1:0], j[CW-1:0]};
              rs_wdata <= result;
            end
            if (op_counter(op) != NCNT) cnt[op_counter(op)] <= cnt[op_counter(op)] + 64'd1;
            pc <= pc + 8'd1;
            sq <= Q_FETCH;
          end
        end
        default: ;
      endcase

      // -------- the kernel
      case (state)
        S_IDLE: begin
          if (ctl_start) begin
            st_done <= 1'b0; st_error <= 1'b0; err_code <= '0; err_step <= '0;
            for (int k = 0; k < NCNT; k++) cnt[k] <= '0;
            u_min <= NO_MIN; u_max <= '0;
            for (int k = 0; k < NBIN; k++) binade_cnt[k] <= '0;
            if (!config_ok) begin
              st_error <= 1'b1;
              err_code <= 4'd1;
            end else begin
              st_busy <= 1'b1;
              rf[cosim_ucode_pkg::R_S] <= r_scale;
              rf[cosim_ucode_pkg::R_ALPHA] <= r_alpha;
              rf[cosim_ucode_pkg::R_LAM] <= r_lambda;
              rng_start <= stochastic;
              step <= '0; ord_base <= '0;
              pc <= cosim_ucode_pkg::ENTRY_INIT;
              sq <= Q_FETCH;
              state <= S_INIT;
              prog_next <= (r_steps == 0) ? S_STEP_END : S_GATHER_ISSUE;
              gi <= '0;
            end
          end
        end
        S_INIT, S_RESP, S_UPD: ;                           // the sequencer runs
        S_GATHER_ISSUE: state <= S_GATHER_TAKE;            // ORDER[step*B + gi] is read
        S_GATHER_TAKE: begin
          if (32'(ord_rdata) >= r_n_samples) begin
            st_busy <= 1'b0; st_error <= 1'b1; err_code <= 4'd1; err_step <= step;
            state <= S_IDLE;
          end else begin
            nidx[gi[BW-1:0]] <= ord_rdata;
            xrow[gi[BW-1:0]] <= DRW'(32'(ord_rdata) * 32'(chunks));
            if (gi + 1'b1 == batch) begin
              gi <= '0;
              bi <= '0; oc <= '0; dk <= '0; dvalid <= 1'b0; acc <= '0; qrow_c <= '0;
              state <= S_DOT;
            end else begin
              gi <= gi + 1'b1;
              state <= S_GATHER_ISSUE;
            end
          end
        end
        S_DOT: begin                                       // issue chunk dk, add chunk dk - 1
          if (dvalid) acc <= acc + chunk_sum;
          dvalid <= 1'b1;
          if (dk + 1'b1 == chunks) state <= S_DOT_LAST;
          else dk <= dk + 1'b1;
        end
        S_DOT_LAST: begin
          acc <= acc + chunk_sum;
          dvalid <= 1'b0;
          state <= S_DOT_CONV;
        end
        S_DOT_CONV: begin
          ds_we <= 1'b1;
          ds_waddr <= {bi[BW-1:0], oc[CW-1:0]};
          ds_wdata <= dot_fp;
          cnt[C_ROUND] <= cnt[C_ROUND] + 64'd1;
          cnt[C_MAC] <= cnt[C_MAC] + 64'(n_feat);
          acc <= '0; dk <= '0;
          state <= S_DOT;
          if (oc + 1'b1 == n_out) begin
            oc <= '0; qrow_c <= '0;
            if (bi + 1'b1 == batch) begin
              bi <= '0;
              state <= S_ROW_ISSUE;
            end else begin
              bi <= bi + 1'b1;
            end
          end else begin
            oc <= oc + 1'b1;
            qrow_c <= qrow_c + QRW'(chunks);
          end
        end
        S_ROW_ISSUE: begin                                 // TARGETS[n_i] is read
          at_base <= (AAW + 1)'(32'(nidx[bi[BW-1:0]]) * 32'(n_out));
          state <= S_ROW_TAKE;
        end
        S_ROW_TAKE: begin
          tgt_word <= tgt_rdata;
          pc <= resp_entry(svrg, problem);
          sq <= Q_FETCH;
          state <= S_RESP;
          prog_next <= S_ROW_NEXT;
        end
        S_ROW_NEXT: begin
          if (bi + 1'b1 == batch) begin
            bi <= '0;
            fi <= '0; oc <= '0; qrow_c <= '0; gt_c <= '0;
            lane <= '0; e_left <= fc;
            state <= S_UPD_ISSUE;
          end else begin
            bi <= bi + 1'b1;
            state <= S_ROW_ISSUE;
          end
        end
        S_UPD_ISSUE: begin                                 // q, q_a, g~ of (f, c) are read
          if (!stochastic || rng_ready) state <= S_UPD_TAKE;
        end
        S_UPD_TAKE: begin
          q_code <= q_rdata[fi[PW-1:0]];
          qa_code <= qa_rdata[fi[PW-1:0]];
          gt_word <= gt_rdata;
          pc <= svrg ? cosim_ucode_pkg::ENTRY_UPD_SVRG : cosim_ucode_pkg::ENTRY_UPD_SGD;
          sq <= Q_FETCH;
          state <= S_UPD;
          prog_next <= S_UPD_NEXT;
        end
        S_UPD_NEXT: begin
          lane <= (lane + 1'b1 == lanes_used) ? '0 : lane + 1'b1;
          e_left <= e_left - 1'b1;
          state <= S_UPD_ISSUE;
          if (oc + 1'b1 == n_out) begin
            oc <= '0; qrow_c <= '0; gt_c <= '0;
            if (fi + 1'b1 == n_feat) state <= S_STEP_END;
            else fi <= fi + 1'b1;
          end else begin
            oc <= oc + 1'b1;
            qrow_c <= qrow_c + QRW'(chunks);
            gt_c <= gt_c + QAW'(f_pad);
          end
        end
        S_STEP_END: begin
          if (step == r_steps) begin                       // only after a run of 0 steps
            st_busy <= 1'b0; st_done <= 1'b1;
            state <= S_IDLE;
          end else begin
            cnt[C_STEPS] <= cnt[C_STEPS] + 64'd1;
            step <= step + 1;
            ord_base <= ord_base + r_batch;
            if (step + 1 == r_steps) begin
              st_busy <= 1'b0; st_done <= 1'b1;
              state <= S_IDLE;
            end else begin
              state <= S_GATHER_ISSUE;
            end
          end
        end
        default: state <= S_IDLE;
      endcase
    end
  end

  // ---------------------------------------------------------------- registers and reads
  always_ff @(posedge clk) begin
    if (rst || ctl_reset) begin
      r_offset_fmt <= cosim_regs_pkg::RESET_OFFSET_FMT;
      r_data_fmt   <= cosim_regs_pkg::RESET_DATA_FMT;
      r_mode       <= cosim_regs_pkg::RESET_MODE;
      r_scale      <= cosim_regs_pkg::RESET_SCALE;
      r_alpha      <= cosim_regs_pkg::RESET_ALPHA;
      r_lambda     <= cosim_regs_pkg::RESET_LAMBDA;
      r_seed_lo    <= cosim_regs_pkg::RESET_SEED_LO;
      r_seed_hi    <= cosim_regs_pkg::RESET_SEED_HI;
      r_epoch      <= cosim_regs_pkg::RESET_EPOCH;
      r_steps      <= cosim_regs_pkg::RESET_STEPS;
      r_batch      <= cosim_regs_pkg::RESET_BATCH;
      r_n_samples  <= cosim_regs_pkg::RESET_N_SAMPLES;
      r_n_features <= cosim_regs_pkg::RESET_N_FEATURES;
      r_n_outputs  <= cosim_regs_pkg::RESET_N_OUTPUTS;
      r_rng_lanes  <= cosim_regs_pkg::RESET_RNG_LANES;
    end else if (bus_wr && !st_busy) begin
      case (32'(bus_addr))
        cosim_regs_pkg::ADDR_OFFSET_FMT: r_offset_fmt <= bus_wdata;
        cosim_regs_pkg::ADDR_DATA_FMT:   r_data_fmt   <= bus_wdata;
        cosim_regs_pkg::ADDR_MODE:       r_mode       <= bus_wdata;
        cosim_regs_pkg::ADDR_SCALE:      r_scale      <= bus_wdata;
        cosim_regs_pkg::ADDR_ALPHA:      r_alpha      <= bus_wdata;
        cosim_regs_pkg::ADDR_LAMBDA:     r_lambda     <= bus_wdata;
        cosim_regs_pkg::ADDR_SEED_LO:    r_seed_lo    <= bus_wdata;
        cosim_regs_pkg::ADDR_SEED_HI:    r_seed_hi    <= bus_wdata;
        cosim_regs_pkg::ADDR_EPOCH:      r_epoch      <= bus_wdata;
        cosim_regs_pkg::ADDR_STEPS:      r_steps      <= bus_wdata;
        cosim_regs_pkg::ADDR_BATCH:      r_batch      <= bus_wdata;
        cosim_regs_pkg::ADDR_N_SAMPLES:  r_n_samples  <= bus_wdata;
        cosim_regs_pkg::ADDR_N_FEATURES: r_n_features <= bus_wdata;
        cosim_regs_pkg::ADDR_N_OUTPUTS:  r_n_outputs  <= bus_wdata;
        cosim_regs_pkg::ADDR_RNG_LANES:  r_rng_lanes  <= bus_wdata;
        default: ;
      endcase
    end
  end

  // Read pipeline: the request's address is registered with the RAMs' read (cycle 1), the
  // word is selected and registered (cycle 2).
  logic        rd1;
  logic        rd1_busy;
  logic [23:0] rd1_addr;
  logic [31:0] rd_word;
  logic [PW-1:0] rd1_bank;
  logic [31:0] rd_a, rd_k;              // the address read, and its counter index
  always_comb begin
    rd_a = 32'(rd1_addr);
    rd_k = (rd_a - cosim_regs_pkg::ADDR_STEPS_DONE_LO) >> 3;
    rd_word = '0;
    case (windows(rd1_addr))
      7'b0000001: rd_word = 32'($signed(d_rdata[rd1_bank]));
      7'b0000010: rd_word = 32'($signed(q_rdata[rd1_bank]));
      7'b0000100: rd_word = 32'($signed(qa_rdata[rd1_bank]));
      7'b0001000: rd_word = gt_rdata;
      7'b0010000: rd_word = at_rdata;
      7'b0100000: rd_word = 32'(ord_rdata);
      7'b1000000: rd_word = tgt_rdata;
      default: ;
    endcase
    if (rd1_busy) rd_word = '0;                            // the windows belong to the kernel
    case (rd_a)
      cosim_regs_pkg::ADDR_ID:         rd_word = cosim_regs_pkg::ID_MAGIC;
      cosim_regs_pkg::ADDR_VERSION:    rd_word = cosim_regs_pkg::RESET_VERSION;
      cosim_regs_pkg::ADDR_STATUS:     rd_word = {29'b0, st_error, st_done, st_busy};
      cosim_regs_pkg::ADDR_LANES:      rd_word = 32'(LANES);
      cosim_regs_pkg::ADDR_PARAMS:     rd_word = {16'(BMAX), 8'(CMAX), 8'(P)};
      cosim_regs_pkg::ADDR_ERROR:      rd_word = 32'(err_code);
      cosim_regs_pkg::ADDR_ERROR_STEP: rd_word = err_step;
      cosim_regs_pkg::ADDR_OFFSET_FMT: rd_word = r_offset_fmt;
      cosim_regs_pkg::ADDR_DATA_FMT:   rd_word = r_data_fmt;
      cosim_regs_pkg::ADDR_MODE:       rd_word = r_mode;
      cosim_regs_pkg::ADDR_SCALE:      rd_word = r_scale;
      cosim_regs_pkg::ADDR_ALPHA:      rd_word = r_alpha;
      cosim_regs_pkg::ADDR_LAMBDA:     rd_word = r_lambda;
      cosim_regs_pkg::ADDR_SEED_LO:    rd_word = r_seed_lo;
      cosim_regs_pkg::ADDR_SEED_HI:    rd_word = r_seed_hi;
      cosim_regs_pkg::ADDR_EPOCH:      rd_word = r_epoch;
      cosim_regs_pkg::ADDR_STEPS:      rd_word = r_steps;
      cosim_regs_pkg::ADDR_BATCH:      rd_word = r_batch;
      cosim_regs_pkg::ADDR_N_SAMPLES:  rd_word = r_n_samples;
      cosim_regs_pkg::ADDR_N_FEATURES: rd_word = r_n_features;
      cosim_regs_pkg::ADDR_N_OUTPUTS:  rd_word = r_n_outputs;
      cosim_regs_pkg::ADDR_RNG_LANES:  rd_word = r_rng_lanes;
      cosim_regs_pkg::ADDR_UPDATE_MIN: rd_word = {1'b0, u_min};
      cosim_regs_pkg::ADDR_UPDATE_MAX: rd_word = {1'b0, u_max};
      default:
        if (rd_a >= cosim_regs_pkg::ADDR_STEPS_DONE_LO && rd_k < NCNT)
          rd_word = rd_a[2] ? hi_latch[rd_k[3:0]] : cnt[rd_k[3:0]][31:0];
        else if (rd_a >> SH_BIN == cosim_regs_pkg::MEM_UPDATE_BINADES_BASE >> SH_BIN && !rd1_busy)
          rd_word = binade_cnt[rd_a[BINW+1:2]];
    endcase
  end

  always_ff @(posedge clk) begin
    if (rst) begin
      rd1 <= 1'b0;
      bus_rvalid <= 1'b0;
    end else begin
      rd1 <= bus_rd;
      rd1_addr <= bus_addr;
      rd1_bank <= bus_addr[PW+1:2];
      rd1_busy <= st_busy;
      bus_rvalid <= rd1;
      bus_rdata <= rd_word;
      if (rd1 && 32'(rd1_addr) >= cosim_regs_pkg::ADDR_STEPS_DONE_LO && !rd1_addr[2]) begin
        for (int k = 0; k < NCNT; k++)
          if (32'(rd1_addr) == cosim_regs_pkg::ADDR_STEPS_DONE_LO + 32'(8 * k)) hi_latch[k] <= cnt[k][63:32];
      end
    end
  end
endmodule
