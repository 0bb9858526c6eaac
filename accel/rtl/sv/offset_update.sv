// offset_update: kernel step 7 for one element, q <- Q_offset(q - t), rounded once from the
// exact difference (combinational, latency 0). Bit for bit accel.backends.emulated.offset_update.
//
//   q          - the offset code: signed, MAXBITS bits, value q * 2^-FL; expected inside the
//                offset range [-2^(IL+FL-1), 2^(IL+FL-1) - 1] (any MAXBITS-bit q is handled).
//   t          - the step in offset units, binary32. Finite by the spec; +-inf is treated as a
//                huge value (clamped, like numpy's clip in the reference); NaN is not defined
//                (the kernel refuses a NaN update before step 7).
//   il, fl     - the offset format fixed<IL,FL> at run time: IL >= 1, IL + FL <= MAXBITS.
//   stochastic - 1: stochastic rounding (bit-add, docs/numerics.md); 0: nearest-even.
//   rbits      - random bits r per rounding: 1..32, or 0 for 32 ("the whole discarded width,
//                capped at 32", which gives the same results as 32). Values above 32 act as 32.
//   word       - this element's 32-bit random word; U = its top r bits (word >> (32 - r)).
//   q_next     - the new code, sign-extended to MAXBITS bits.
//   saturated  - the rounded q - t lay outside the offset range and was clamped to it.
//   kept       - the rounded q - t is q itself: the update rounded to 0 (it vanished when t != 0;
//                the update statistics, docs/accelerator.md).
//
// How. |t| is clamped to 2^(IL+1) first (beyond it q - t saturates either way, and is counted
// the same; docs/accelerator.md step 7). Then y = -t * 2^FL (the difference in grid units, less
// q) is formed exactly down to G = 32 fraction bits, with a sticky bit for anything below:
// y_G = floor(y * 2^G) / 2^G. For t < 0, y = +|y| and y_G is |y| truncated; for t > 0,
// floor(-(M + d)) = -M - 1 whenever the discarded part d is nonzero, i.e. -M - sticky. Then
// z = q + y_G in a wide two's-complement adder, exact: q is an integer.
//   The rounding then looks only at K = floor(z) and z's fraction bits, and both agree with the
// exact q - t (flooring at 2^-G first cannot change floor(q - t) or its top 32 fraction bits):
//   - nearest-even: half = the top fraction bit; the exact fraction is above one half iff a
//     lower fraction bit or sticky is set. Ties are decided on the exact q - t (the reference
//     takes q + Q(-t), but at ties re-rounds q - t itself, which is what a wide adder does).
//   - stochastic (docs/numerics.md, fixed point): the signed value is rounded from its floor,
//     as two's complement, F = the top r bits of frac(q - t) = of z's fraction, and it rounds
//     up (toward +inf) iff F + U >= 2^r: the carry out of (frac & m) + (word & m) with m the
//     top r bits. With fewer than r discarded bits the fraction's low bits are zero, as the
//     spec requires. Bits below 2^-32 never matter (r <= 32), so y_G loses nothing.
// Finally K + up is clamped into the offset range, which is what saturated reports.
//
// Widths: |y| <= 2^(IL+FL+1) <= 2^(MAXBITS+1) and |q| <= 2^(MAXBITS-1), so z needs MAXBITS+3
// integer bits (sign included) and G fraction bits: 51 bits for MAXBITS = 16. Critical path:
// t's exponent -> a (MAXBITS+58)-bit shifter -> the z adder -> the 33-bit carry -> increment
// -> range compare; a core at a high clock rate registers around it.
module offset_update #(
  parameter int MAXBITS = 16,               // the widest offset format, IL + FL <= MAXBITS
  localparam int FW     = $clog2(MAXBITS + 1)  // il, fl width: 0..MAXBITS
) (
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

  localparam int G  = 32;                  // fraction bits kept of y: r <= 32
  localparam int MW = MAXBITS + 2 + G;     // |y| * 2^G <= 2^(MAXBITS+1+G), inclusive
  localparam int XW = MW + 24;             // the significand shifted into place, 24 bits below
  localparam int SW = MAXBITS + 3 + G;     // z = q + y_G, signed
  localparam int KW = MAXBITS + 3;         // floor(z), signed
  localparam int SHW = $clog2(XW + 1);     // shift amount 0..XW

  logic             t_neg, clamp;
  fp32_pkg::exp_t   t_exp;       // unbiased exponent of t's significand bit 23
  logic [23:0]      t_sig;       // t's significand, hidden bit included
  fp32_pkg::exp_t   sh;          // t_sig's bit 0 weighs 2^(sh - G) in grid units (y * 2^G = t_sig << sh)
  logic [XW-1:0]    x;           // t_sig << (sh + 24): |y| * 2^G in [XW-1:24], what falls below in [23:0]
  logic [MW-1:0]    m;           // floor(|y| * 2^G)
  logic             sticky;      // |y| * 2^G is not an integer
  logic signed [SW-1:0] y_g;     // floor(y * 2^G)
  logic signed [SW-1:0] z;       // (q + y_G) * 2^G
  logic signed [KW-1:0] k;       // floor(q - t)
  logic [G-1:0]     frac;        // frac(q - t), top G bits
  logic [5:0]       r;           // random bits used, 1..32
  logic [31:0]      rmask;       // the top r bits
  logic             carry;       // F + U >= 2^r: the carry out of the r-bit add, aligned at bit 31
  logic             up;
  logic signed [KW-1:0] rounded, lim;  // lim = 2^(IL+FL-1): the range is [-lim, lim - 1]

  always_comb begin
    // Decode t (fp32_pkg: subnormals share exponent -126, no hidden bit).
    t_neg = t[31];
    t_exp = fp32_pkg::exponent(t[30:23]);
    t_sig = fp32_pkg::significand(t[30:0]);
    // |t| >= 2^(IL+1) (or inf): replaced by 2^(IL+1) exactly.
    clamp = (t[30:23] == 8'hff) ||
            (t_exp >= signed'(fp32_pkg::EXP_W'(il)) + signed'(fp32_pkg::EXP_W'(1)));

    // |y| * 2^G = t_sig * 2^(t_exp - 23 + FL + G). When not clamped, t_exp <= IL, so the
    // shifted significand ends below bit IL+FL+G+1 <= MW and x never drops a bit at the top.
    sh = t_exp - signed'(fp32_pkg::EXP_W'(23)) + signed'(fp32_pkg::EXP_W'(fl))
         + signed'(fp32_pkg::EXP_W'(G));
    if (clamp) begin
      m      = MW'(1) << (MW'(il) + MW'(fl) + MW'(1 + G));
      sticky = 1'b0;
      x      = '0;
    end else begin
      // sh + 24 < 0: every bit of t is below 2^-G (only t_sig != 0 matters).
      x      = (sh + signed'(fp32_pkg::EXP_W'(24)) < 0) ? XW'(0)
             : XW'(t_sig) << SHW'(sh + signed'(fp32_pkg::EXP_W'(24)));
      m      = x[XW-1:24];
      sticky = (sh + signed'(fp32_pkg::EXP_W'(24)) < 0) ? (t_sig != 24'd0) : (x[23:0] != 24'd0);
    end

    // y = -t: for t > 0, floor(-(m + sticky part)) = -m - sticky (in units of 2^-G).
    y_g  = t_neg ? SW'(m) : -(SW'(m)) - SW'(sticky);     // -(..): Yosys reads -SW'(m) as (-SW)'(m)
    z    = (SW'(q) <<< G) + y_g;
    k    = z[SW-1:G];
    frac = z[G-1:0];

    // Rounding decision on the exact q - t.
    r      = (rbits == 6'd0 || rbits > 6'd32) ? 6'd32 : rbits;
    rmask  = ~(32'hffff_ffff >> r);
    carry  = 1'((33'(frac & rmask) + 33'(word & rmask)) >> 32);
    if (stochastic)
      up = carry;
    else
      // sticky never decides here (a 24-bit t reaching below 2^-G has |y| < 2^-9, so the
      // half bit is clear, or for t > 0 the low fraction bits are set); kept so that the rule
      // does not lean on that.
      up = frac[G-1] && ((frac[G-2:0] != '0) || sticky || k[0]);
    rounded = k + KW'(up);
    kept = rounded == KW'(q);

    // Clamp into fixed<IL,FL>.
    lim = KW'(1) << (il + fl - FW'(1));
    if (rounded >= lim) begin
      q_next    = MAXBITS'(lim - KW'(1));
      saturated = 1'b1;
    end else if (rounded < -lim) begin
      q_next    = MAXBITS'(-lim);
      saturated = 1'b1;
    end else begin
      q_next    = MAXBITS'(rounded);
      saturated = 1'b0;
    end
  end

endmodule
