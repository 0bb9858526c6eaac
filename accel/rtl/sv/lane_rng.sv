// lane_rng: LANES xorshift32 streams for stochastic rounding, bit-exact with
// accel.numerics.LaneRNG (docs/numerics.md, "The generator (LaneRNG)").
//
// Usage: set seed and epoch, pulse start for one cycle; ready falls on the next cycle and
// rises again LANES + 16 cycles after the start edge (LANES cycles of seeding, one hashed
// lane per cycle, then the 16-draw warm-up on all lanes at once). While ready, each cycle
// advances lane l by one draw where next[l] is high; words then holds the new word of every
// lane, lane l in words[32*l +: 32]. Element k of a tensor takes lane k mod L (the L <= LANES
// lanes in use), so one next serves L consecutive elements, and the last round of a tensor
// whose size is not a multiple of L advances its first lanes only.
//
// - start is accepted in any state (it restarts a seeding in progress) and wins over next;
// - next is ignored while ready is low;
// - seed and epoch are sampled on the start edge only;
// - after reset: ready low, every lane 0 (a stream only exists once started).
//
// Lane l of epoch e of run seed s starts from
//   t = wang32(s[31:0] ^ s[63:32] ^ {e[15:0], 16'h0} ^ {16'h0, l[15:0]}), 0 -> 32'h9E3779B9.
// LANES must be 1..65536 (lane ids are 16 bits).
module lane_rng #(
    parameter int LANES = 16
) (
    input  logic                  clk,
    input  logic                  rst,      // synchronous, active high
    input  logic [63:0]           seed,     // run seed
    input  logic [15:0]           epoch,    // epoch mod 2^16
    input  logic                  start,    // one-cycle pulse: (re)seed every lane
    input  logic [LANES-1:0]      next,     // advance lane l by one draw where next[l] (when ready)
    output logic                  ready,    // lanes seeded and warmed up
    output logic [LANES*32-1:0]   words     // lane l's current word at [32*l +: 32]
);
    localparam int WARMUP = 16;
    localparam logic [31:0] ZERO_SEED_REPLACEMENT = 32'h9E37_79B9;
    localparam logic [15:0] LAST_LANE = 16'(LANES - 1);

    // Thomas Wang's hash32shift, adders and shifts only (accel/numerics/rng.py: wang32).
    // Once per lane and epoch, so one unit is shared by all lanes.
    function automatic logic [31:0] wang32(input logic [31:0] a_in);
        logic [31:0] a;
        a = ~a_in + (a_in << 15);
        a = a ^ (a >> 12);
        a = a + (a << 2);
        a = a ^ (a >> 4);
        a = a + (a << 3) + (a << 11);
        a = a ^ (a >> 16);
        wang32 = a;
    endfunction

    // One xorshift32 draw (Marsaglia 13/17/5).
    function automatic logic [31:0] xorshift32(input logic [31:0] x_in);
        logic [31:0] x;
        x = x_in ^ (x_in << 13);
        x = x ^ (x >> 17);
        x = x ^ (x << 5);
        xorshift32 = x;
    endfunction

    typedef enum logic [1:0] {IDLE, SEED, WARM, RUN} state_t;

    state_t             state;
    logic [31:0]        base;       // seed halves and epoch folded, sampled at start
    logic [15:0]        lane;       // lane being seeded
    logic [3:0]         warm;       // warm-up draws done, minus one
    logic [31:0]        st [LANES]; // lane states; st[l] is lane l
    logic [31:0]        hashed;

    always_comb begin
        hashed = wang32(base ^ {16'h0, lane});
        if (hashed == 32'h0) hashed = ZERO_SEED_REPLACEMENT;  // the state xorshift32 never leaves
    end

    always_ff @(posedge clk) begin
        if (rst) begin
            state <= IDLE;
            base  <= '0;
            lane  <= '0;
            warm  <= '0;
            for (int l = 0; l < LANES; l++) st[l] <= '0;
        end else if (start) begin
            state <= SEED;
            base  <= seed[31:0] ^ seed[63:32] ^ {epoch, 16'h0};
            lane  <= '0;
        end else begin
            unique case (state)
                SEED: begin
                    // Shift in lane 0 first: after LANES shifts st[l] holds lane l, with no
                    // per-lane write decoder.
                    for (int l = 0; l < LANES - 1; l++) st[l] <= st[l + 1];
                    st[LANES - 1] <= hashed;
                    lane <= lane + 16'd1;
                    if (lane == LAST_LANE) begin
                        state <= WARM;
                        warm  <= '0;
                    end
                end
                WARM: begin
                    for (int l = 0; l < LANES; l++) st[l] <= xorshift32(st[l]);
                    warm <= warm + 4'd1;
                    if (warm == 4'(WARMUP - 1)) state <= RUN;
                end
                RUN: for (int l = 0; l < LANES; l++) if (next[l]) st[l] <= xorshift32(st[l]);
                default: ;  // IDLE: not seeded since reset
            endcase
        end
    end

    assign ready = (state == RUN);
    always_comb for (int l = 0; l < LANES; l++) words[32*l +: 32] = st[l];
endmodule
