// fp32_div: binary32 division y = a / b, correctly rounded (nearest, ties to even).
//
// Interface (one clock, synchronous active-high reset):
//   start  - sampled on a rising edge while busy is low; a, b are sampled on that edge.
//            start while busy is ignored (the running division is not disturbed).
//   busy   - set by the start edge, cleared by the result edge (registered).
//   done   - a one-cycle pulse: high for the single cycle after the result edge.
//   y, div_by_zero, invalid, overflow - registered, valid from done and held until the next
//            result (they change only on a result edge).
//   rst    - clears busy, done, y and the flags; a division under way is dropped.
// Latency: fixed, 27 rising edges from the start edge to the result edge, for every input
// (special cases included), so a scheduler needs no handshake beyond counting. Back to back,
// a start in the cycle done is high is accepted: one division every 28 cycles.
//
// Semantics (IEEE 754 division, binary32, roundTiesToEven):
//   - subnormal operands and results, signed zeros, infinities; the sign is sign(a) ^ sign(b)
//     for every non-NaN result, zero and infinity included;
//   - x/0 (x finite nonzero) = inf, raises div_by_zero; inf/0 = inf and 0/inf = 0, no flag;
//   - 0/0 and inf/inf give NaN and raise invalid; so does a signaling NaN operand;
//   - any NaN result is the canonical quiet NaN 32'h7fc0_0000;
//   - overflow: finite operands whose rounded quotient is infinite.
//
// Datapath: both significands are normalized to [2^23, 2^24) (subnormals too), so their
// quotient lies in (1/2, 2). A restoring recurrence produces one quotient bit per cycle, 26
// bits of weight 2^0 .. 2^-25: 24 significant bits plus a round bit even when the first bit is
// 0. The final partial remainder is nonzero exactly when the quotient has more nonzero bits,
// which is the sticky bit. fp32_pkg::round_pack (shared with fp32_add / fp32_mul) then rounds
// once, shifting into the subnormal range first when the exponent is too small; bits shifted
// out join the sticky bit, so a subnormal quotient is correctly rounded too.
module fp32_div (
  input  logic        clk,
  input  logic        rst,
  input  logic        start,
  input  logic [31:0] a,
  input  logic [31:0] b,
  output logic [31:0] y,
  output logic        done,
  output logic        busy,
  output logic        div_by_zero,
  output logic        invalid,
  output logic        overflow
);

  localparam int QBITS = 26;   // quotient bits produced, weights 2^0 .. 2^-25

  // A finite nonzero operand as sig x 2^(exp - 23) with sig's leading one at bit 23: a
  // subnormal's significand is shifted up (and its exponent lowered) so that the recurrence
  // always divides two significands in [2^23, 2^24) and yields 24 significant bits.
  typedef struct packed {
    logic [23:0]                      sig;
    logic signed [fp32_pkg::EXP_W-1:0] exp;   // fp32_pkg::exp_t
  } norm_t;

  function automatic norm_t normalize(input logic [30:0] m);
    logic [fp32_pkg::LZ_W-1:0] lz;   // 0 for a normal operand, 1..23 for a subnormal one
    lz        = fp32_pkg::clz({fp32_pkg::significand(m), {(fp32_pkg::SIG_W - 24){1'b0}}});
    normalize = {fp32_pkg::significand(m) << lz,                               // .sig
                 fp32_pkg::exponent(m[30:23]) - signed'(fp32_pkg::EXP_W'(lz))};  // .exp
  endfunction

  // ---- decode at start: classes, the special-case result, normalized operands ----
  norm_t       na, nb;
  logic        sign;
  logic        special;          // the result needs no recurrence
  logic [31:0] special_y;
  logic        special_dz, special_inv;

  always_comb begin
    na          = normalize(a[30:0]);
    nb          = normalize(b[30:0]);
    sign        = a[31] ^ b[31];
    special     = 1'b1;
    special_y   = fp32_pkg::QNAN;
    special_dz  = 1'b0;
    special_inv = fp32_pkg::is_snan(a[30:0]) || fp32_pkg::is_snan(b[30:0]);
    if (fp32_pkg::is_nan(a[30:0]) || fp32_pkg::is_nan(b[30:0])) begin
      special_y = fp32_pkg::QNAN;
    end else if ((fp32_pkg::is_inf(a[30:0]) && fp32_pkg::is_inf(b[30:0])) ||
                 (fp32_pkg::is_zero(a[30:0]) && fp32_pkg::is_zero(b[30:0]))) begin
      special_y   = fp32_pkg::QNAN;
      special_inv = 1'b1;
    end else if (fp32_pkg::is_inf(a[30:0]) || fp32_pkg::is_zero(b[30:0])) begin
      special_y  = {sign, 8'hff, 23'd0};
      special_dz = fp32_pkg::is_zero(b[30:0]) && !fp32_pkg::is_inf(a[30:0]);  // a finite nonzero
    end else if (fp32_pkg::is_zero(a[30:0]) || fp32_pkg::is_inf(b[30:0])) begin
      special_y = {sign, 31'd0};
    end else begin
      special = 1'b0;
    end
  end

  // ---- state ----
  logic [24:0]       rem;        // partial remainder, invariant rem < 2 * dvs
  logic [23:0]       dvs;        // divisor significand
  logic [QBITS-1:0]  q;          // quotient bits, shifted in at the bottom
  logic [4:0]        count;      // recurrence steps done
  fp32_pkg::exp_t    qexp;       // unbiased exponent of the quotient bit of weight 2^0
  logic              qsign, qspecial, qdz, qinv;
  logic [31:0]       qspecial_y;

  // One restoring step: subtract the divisor if it fits, then shift the remainder.
  logic [25:0] diff;
  logic        qbit;
  logic [24:0] rem_next;
  always_comb begin
    diff     = {1'b0, rem} - {2'b00, dvs};
    qbit     = !diff[25];
    rem_next = qbit ? diff[24:0] : rem;
  end

  // ---- rounding of the finished quotient ----
  // round_pack takes a 48-bit fixed-point significand whose MSB weighs 2^qexp and shifts out
  // the leading zero of a quotient below 1 itself. The sticky bit sits right below the 26
  // quotient bits, so the round bit (at most the 26th significant bit) stays above it.
  fp32_pkg::rounded_t rounded;
  always_comb begin
    rounded = fp32_pkg::round_pack(qsign, qexp, {q, |rem, {(fp32_pkg::SIG_W - QBITS - 1){1'b0}}});
  end

  always_ff @(posedge clk) begin
    if (rst) begin
      busy        <= 1'b0;
      done        <= 1'b0;
      count       <= 5'd0;
      y           <= 32'd0;
      div_by_zero <= 1'b0;
      invalid     <= 1'b0;
      overflow    <= 1'b0;
    end else begin
      done <= 1'b0;
      if (!busy) begin
        if (start) begin
          busy       <= 1'b1;
          count      <= 5'd0;
          rem        <= {1'b0, na.sig};
          dvs        <= nb.sig;
          q          <= '0;
          // a/b = (sig_a / sig_b) x 2^(exp_a - exp_b), sig_a / sig_b in (1/2, 2).
          qexp       <= na.exp - nb.exp;
          qsign      <= sign;
          qspecial   <= special;
          qspecial_y <= special_y;
          qdz        <= special_dz;
          qinv       <= special_inv;
        end
      end else if (count != 5'(QBITS)) begin
        // Specials run the same number of steps on don't-care operands: fixed latency.
        rem   <= rem_next << 1;     // < 2 * dvs again: rem_next < dvs
        q     <= {q[QBITS-2:0], qbit};
        count <= count + 5'd1;
      end else begin
        busy        <= 1'b0;
        done        <= 1'b1;
        y           <= qspecial ? qspecial_y : rounded.bits;
        div_by_zero <= qdz;
        invalid     <= qinv;
        overflow    <= !qspecial && rounded.overflow;
      end
    end
  end

endmodule
