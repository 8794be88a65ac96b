// test_mta.cpp — the CUDA launch layer, tested on the CPU (no GPU, no torch): chunk geometry, launch
// and stage planning, argument packing and kernel selection (csrc/cuda/mta_plan.h,
// tigercore/kernel_key.h), the call-free arithmetic of the kernels (divides, divmod_u64, reciprocal_rn, div_by),
// and the CUDA block code itself (csrc/cuda/sign_step_block.h): every block and thread of every
// planned launch runs on the CPU and its results are compared bit for bit with the CPU kernels
// (csrc/cpu/optim_kernels.h) for every dtype, momentum dtype (8-bit codes included), precision mode, Tiger class,
// GradScaler and guard case, a device lr, caller-given step sizes and flags; tiger_stats' sums and
// flags are compared with a direct float64 sum and an independent finiteness check. Only CUB's
// cross-thread sum of stage 1 is replaced (by an in-order sum of the same per-thread parts), and
// the 8-bit path's warp max (the host call of a warp's first thread runs all 32 lanes).
// Build and run: ctest, or by hand
//   g++ -std=c++20 -O1 -ffp-contract=off -Icsrc/include -Icsrc csrc/tests/test_mta.cpp && ./a.out
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#define TC_ISA cpu_ref  // the CPU kernels, compiled once more here as the reference
#include "cpu/optim_kernels.h"
#include "cuda/mta_plan.h"
#include "cuda/sign_step_block.h"
#include "tigercore/kernel_key.h"
#include "test_harness.h"

using namespace tigercore;
using namespace tigercore::mta;

// ---- geometry ---------------------------------------------------------------------------------

static void check_geometry(int64_t n, int64_t L, Bulk& b) {
  const Grid g = grid_of(n, L);
  std::vector<char> seen(size_t(g.slots()), 0);
  int64_t covered = 0;
  bool ok = g.rows == n / L;
  for (int64_t c = 0; c < g.chunks && ok; ++c) {
    const Span s = span_of(n, L, c);
    ok &= s.start == covered && s.len >= 1 && s.len <= kChunk && s.nrows >= 1 && int64_t(s.nrows) * s.rlen == s.len;
    ok &= g.pieces > 1 || s.start % L == 0;  // whole rows start at a row
    for (int32_t r = 0; r < s.nrows && ok; ++r) {
      const int64_t first = s.start + int64_t(r) * s.rlen;
      const int64_t row = first / L;
      ok &= row == s.row + r && (first + s.rlen - 1) / L == row;  // a slot-row never crosses a row
      const int64_t slot = row * g.pieces + (first % L) / kChunk;
      ok &= s.slot + r == slot && slot < g.slots() && !seen[size_t(slot)];
      if (ok) seen[size_t(slot)] = 1;
    }
    covered += s.len;
  }
  ok &= covered == n && std::all_of(seen.begin(), seen.end(), [](char x) { return x != 0; });
  if (ok) b.ok();
  else if (b.report()) std::printf("    numel %lld row_len %lld\n", (long long)n, (long long)L);
}

static void test_geometry() {
  std::printf("chunk geometry: grid_of / span_of\n");
  Bulk b("chunks tile each tensor; slot-rows stay in one row; slots are a bijection");
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(8), int64_t(4097), kChunk - 1, kChunk, kChunk + 1, 3 * kChunk + 5,
                    int64_t(1) << 22})
    check_geometry(n, n, b);
  for (int64_t L : {1, 3, 7, 8, 100, 768, 8192, 21845, 32768, 32769, 65535, 65536, 65537, 131072, 200003})
    for (int64_t rows : {1, 2, 3, 5, 85, 86, 1000})
      if (L * rows <= (int64_t(1) << 25)) check_geometry(L * rows, L, b);
  b.finish(__LINE__);
  // 8-bit momentum: flat chunks of whole quantisation blocks; row + (lead + i) / rlen is element i's row
  Bulk f("flat_span: chunks tile the tensor on kQ8Block boundaries; (row, lead) locate each element's row");
  for (int64_t L : {int64_t(1), int64_t(7), int64_t(768), int64_t(70001), int64_t(1) << 20, (int64_t(1) << 31) - 1})
    for (int64_t rows : {int64_t(1), int64_t(3), int64_t(90), int64_t(5000)}) {
      if (L * rows > (int64_t(1) << 34)) continue;
      const int64_t n = L * rows, chunks = (n + kChunk - 1) / kChunk;
      bool ok = true;
      int64_t covered = 0;
      for (int64_t c = 0; c < chunks && ok; ++c) {
        const Span s = flat_span(n, L, c);
        ok &= s.start == covered && s.start % kQ8Block == 0 && s.len >= 1 && s.len <= kChunk && s.rlen == L;
        for (int64_t i : {int64_t(0), int64_t(s.len) / 2, int64_t(s.len) - 1})
          ok &= s.row + (uint32_t(s.lead) + uint32_t(i)) / uint32_t(L) == (s.start + i) / L;
        covered += s.len;
      }
      if (ok && covered == n) f.ok();
      else if (f.report()) std::printf("    row_len %lld rows %lld\n", (long long)L, (long long)rows);
    }
  f.finish(__LINE__);
  CHECK(grid_of(0, 0).chunks == 0 && grid_of(0, 5).chunks == 0);
  CHECK(grid_of(768 * 100, 768).rows_per_chunk == 85 && grid_of(768 * 100, 768).chunks == 2);
  CHECK(grid_of(3 * 70001, 70001).pieces == 2 && grid_of(3 * 70001, 70001).chunks == 6);
}

// ---- planning and packing -----------------------------------------------------------------------

static StepTensor tensor_of(int64_t numel, int64_t row_len, DType p = DType::kFloat32, DType m = DType::kFloat32,
                            Precision mode = Precision::kNone) {
  StepTensor t{};
  t.numel = numel, t.row_len = row_len, t.param_dtype = p, t.momentum_dtype = m, t.mode = mode;
  return t;
}

static void test_plan() {
  std::printf("launch planning and argument packing\n");
  static_assert(std::is_trivially_copyable_v<MtaArgs> && std::is_trivially_copyable_v<KernelScalars> &&
                std::is_trivially_copyable_v<StepCall> && std::is_trivially_copyable_v<CounterArgs>);
  std::printf("  sizeof: MtaArgs %zu + StepCall %zu + KernelScalars %zu = %zu, CounterArgs %zu (limit %zu)\n",
              sizeof(MtaArgs), sizeof(StepCall), sizeof(KernelScalars),
              sizeof(MtaArgs) + sizeof(StepCall) + sizeof(KernelScalars), sizeof(CounterArgs), kMaxKernelArgBytes);
  Rng rng(11);
  Bulk plans("plan_launches: order kept, limits kept, empty tensors dropped");
  Bulk locs("locate_block inverts the packed block_start");
  for (int trial = 0; trial < 300; ++trial) {
    const int n = int(rng.u32() % 320);
    std::vector<int64_t> blocks(static_cast<size_t>(n));
    for (auto& x : blocks) {
      const uint32_t r = rng.u32() % 100;
      x = r < 15 ? 0 : r < 97 ? int64_t(rng.u32() % 40) : int64_t(rng.u32() % 5000);
    }
    const int max_tensors = std::vector<int>{1, 2, 7, kMaxTensors}[rng.u32() % 4];
    const int64_t max_blocks = std::vector<int64_t>{1, 10, 100, kMaxBlocksPerLaunch}[rng.u32() % 4];
    std::vector<int32_t> order(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i) order[size_t(i)] = int32_t(rng.u32() % 2 ? i : n - 1 - i);
    const auto launches = plan_launches(order, [&](int32_t i) { return blocks[size_t(i)]; }, max_tensors, max_blocks);
    std::vector<int32_t> flat, want;
    for (int32_t i : order)
      if (blocks[size_t(i)] > 0) want.push_back(i);
    bool ok = true;
    for (const Launch& l : launches) {
      ok &= !l.tensors.empty() && int(l.tensors.size()) <= max_tensors && l.block_start.size() == l.tensors.size() + 1;
      ok &= l.blocks() <= max_blocks || l.tensors.size() == 1;
      for (size_t j = 0; j < l.tensors.size(); ++j) {
        ok &= l.block_start[j + 1] - l.block_start[j] == blocks[size_t(l.tensors[j])];
        flat.push_back(l.tensors[j]);
      }
      if (int(l.tensors.size()) > kMaxTensors) continue;
      std::vector<MtaTensor> mt(static_cast<size_t>(n));
      for (int i = 0; i < n; ++i) mt[size_t(i)].ordinal = i;
      const MtaArgs a = pack_args(l, mt);
      bool lok = a.n == int32_t(l.tensors.size());
      for (int32_t j = 0; j < a.n && lok; ++j)
        for (int64_t c = 0; c < blocks[size_t(l.tensors[size_t(j)])] && lok; ++c) {
          const BlockLoc loc = locate_block(a, l.block_start[size_t(j)] + c);
          lok &= loc.tensor == j && loc.chunk == c && a.t[loc.tensor].ordinal == l.tensors[size_t(j)];
        }
      if (lok) locs.ok();
      else if (locs.report()) std::printf("    trial %d\n", trial);
    }
    ok &= flat == want;
    if (ok) plans.ok();
    else if (plans.report()) std::printf("    trial %d: n %d max_tensors %d max_blocks %lld\n", trial, n, max_tensors,
                                          (long long)max_blocks);
  }
  plans.finish(__LINE__);
  locs.finish(__LINE__);

  int64_t counters[1000];
  double sums[1000];
  for (int count : {0, 1, kMaxCounters - 1, kMaxCounters, kMaxCounters + 1, 1000})
    for (bool with_sums : {false, true}) {
      std::vector<int64_t*> ptrs;
      std::vector<double*> sp;
      std::vector<int64_t> rows;
      for (int i = 0; i < count; ++i) {
        ptrs.push_back(&counters[i]);
        if (with_sums) sp.push_back(&sums[i]), rows.push_back(i % 7);
      }
      const auto packs = pack_counters(ptrs, sp, rows);
      bool ok = int(packs.size()) == (count + kMaxCounters - 1) / kMaxCounters;
      int k = 0;
      for (const CounterArgs& s : packs)
        for (int32_t i = 0; i < s.n; ++i, ++k)
          ok &= s.step[i] == ptrs[size_t(k)] && s.sums[i] == (with_sums ? sp[size_t(k)] : nullptr) &&
                s.rows[i] == (with_sums ? rows[size_t(k)] : 0);
      CHECK(ok && k == count, "pack_counters(%d, sums %d)", count, int(with_sums));
    }

  const auto groups = group_by<int>(7, [](int32_t i) { return (i * 5) % 3; });
  CHECK(groups.size() == 3 && groups[0].first == 0 && groups[1].first == 2 && groups[2].first == 1 &&
        groups[0].second == std::vector<int32_t>({0, 3, 6}) && groups[1].second == std::vector<int32_t>({1, 4}));

  // Tiger E: 10 rows of 768; an empty (3, 0) tensor (3 rows in the plan's layout, no slots); one
  // row of 3 * kChunk + 1 (4 pieces).
  std::vector<StepTensor> ts = {tensor_of(768 * 10, 768), tensor_of(0, 0), tensor_of(3 * kChunk + 1, 3 * kChunk + 1)};
  const WorkspaceLayout w = workspace_layout(ts, {0, 10, 13}, 14);
  CHECK(w.slot0 == std::vector<int64_t>({0, 10, 10}) && w.row0 == std::vector<int64_t>({0, 10, 13}) &&
        w.slots == 14 && w.rows == 14 && w.bytes() == 14 * 8 + 14 * 8 + 3 * 4);
  CHECK(update_blocks(ts[0]) == 1 && update_blocks(ts[1]) == 0 && update_blocks(ts[2]) == 4 && row_blocks(ts[0]) == 1);
  // 8-bit momentum: flat chunks for the update, row chunks for stage 1
  const StepTensor q8 = tensor_of(100 * 1000, 1000, DType::kFloat32, DType::kCode8);
  CHECK(update_blocks(q8) == 2 && reduce_blocks(q8) == grid_of(100 * 1000, 1000).chunks && reduce_blocks(q8) == 2);
  const StepTensor q8e = tensor_of(90 * 768, 768, DType::kBFloat16, DType::kCode8);
  CHECK(update_blocks(q8e) == 2 && grid_of(90 * 768, 768).rows_per_chunk == 85);

  alignas(16) static unsigned char buf[64];
  MtaTensor t{{buf, buf + 16, buf + 32, nullptr}, 0, 0, nullptr, 0, 0, 0, 0, 0, nullptr};
  CHECK(chunk_is_aligned(t, 0, 4) && chunk_is_aligned(t, 8, 8) && !chunk_is_aligned(t, 2, 4));
  t.ptr[3] = buf + 2;
  CHECK(!chunk_is_aligned(t, 0, 4));
}

// The stages of a call: which launches each input combination plans, and what they cover.
static void test_stages() {
  std::printf("stage planning: plan_call / step_stages / stats_stages\n");
  // 200 tensors (two counter launches): fp32 and bf16 (two kernel instantiations), some empty.
  std::vector<StepTensor> ts;
  std::vector<int64_t> row0;
  int64_t rows = 0;
  std::vector<int64_t> step(200, 0);
  std::vector<double> sums(400, 0.0);
  std::vector<int64_t*> steps;
  std::vector<double*> carried;
  for (int i = 0; i < 200; ++i) {
    const int64_t n = i % 9 == 0 ? 0 : 5 + i;
    ts.push_back(tensor_of(n, n, i % 2 ? DType::kBFloat16 : DType::kFloat32));
    row0.push_back(rows);
    carried.push_back(&sums[size_t(rows)]);
    rows += 1 + i % 2;  // any row layout: the counters mark each tensor's rows
    steps.push_back(&step[size_t(i)]);
  }
  auto covered = [&](const std::vector<MtaArgs>& launches, std::vector<int>& seen) {
    for (const MtaArgs& a : launches)
      for (int32_t j = 0; j < a.n; ++j) {
        const MtaTensor& t = a.t[j];
        const StepTensor& s = ts[size_t(t.ordinal)];
        const bool same = t.numel == s.numel && t.step == steps[size_t(t.ordinal)] && t.row0 == row0[size_t(t.ordinal)];
        seen[size_t(t.ordinal)] += same ? 1 : 1000;
      }
  };
  auto each_once = [&](const std::vector<int>& seen) {
    for (size_t i = 0; i < ts.size(); ++i)
      if (seen[i] != (ts[i].numel > 0 ? 1 : 0)) return false;
    return true;
  };
  StepHyper lion{};
  lion.algo = Algo::kLion;
  StepHyper tiger{};
  tiger.algo = Algo::kTiger, tiger.tiger_class = TigerClass::kK, tiger.nonfinite_guard = true;
  StepHyper tiger_v = tiger;
  tiger_v.tiger_class = TigerClass::kV, tiger_v.nonfinite_guard = false;

  const CallPlan pl = plan_call(ts, row0, rows, steps, {}, step_stages(lion, false, false));
  std::vector<int> seen(ts.size(), 0);
  for (const KeyedLaunches& k : pl.update) covered(k.launches, seen);
  bool counters_ok = pl.counters.size() == 2 && pl.counters[0].n == kMaxCounters && pl.counters[1].n == 40;
  for (const CounterArgs& c : pl.counters)
    for (int32_t j = 0; j < c.n; ++j) counters_ok &= c.sums[j] == nullptr;
  CHECK(pl.reduce.empty() && pl.rows.empty() && pl.update.size() == 2 && each_once(seen) && counters_ok &&
        !pl.needs_workspace(), "Lion: updates of every non-empty tensor once, every counter, no sums");

  const CallPlan pt = plan_call(ts, row0, rows, steps, carried, step_stages(tiger, false, false));
  std::vector<int> seen_reduce(ts.size(), 0), seen_rows(ts.size(), 0), seen_update(ts.size(), 0);
  for (const KeyedLaunches& k : pt.reduce) covered(k.launches, seen_reduce);
  covered(pt.rows, seen_rows);
  for (const KeyedLaunches& k : pt.update) covered(k.launches, seen_update);
  bool sums_ok = pt.counters.size() == 2;
  int k = 0;
  for (const CounterArgs& c : pt.counters)
    for (int32_t j = 0; j < c.n; ++j, ++k)
      sums_ok &= c.step[j] == steps[size_t(k)] && c.sums[j] == carried[size_t(k)] && c.rows[j] == 1 + k % 2;
  CHECK(pt.reduce.size() == 2 && each_once(seen_reduce) && each_once(seen_rows) && each_once(seen_update) &&
        sums_ok && k == 200 && pt.needs_workspace(), "Tiger K: stage 1, stage 2, update, counters with sums");

  const Stages given_both = step_stages(tiger, true, true), given_eta = step_stages(tiger, true, false);
  CHECK(!given_both.reduce_sums && !given_both.reduce_flags && !given_both.rows && given_both.update &&
        plan_call(ts, row0, rows, steps, carried, given_both).reduce.empty(),
        "Tiger: a caller's eta and flags skip stages 1 and 2");
  CHECK(!given_eta.reduce_sums && given_eta.reduce_flags && !given_eta.rows &&
        plan_call(ts, row0, rows, steps, carried, given_eta).rows.empty(),
        "Tiger: a caller's eta skips the sums, the guard still reduces its flags");
  const Stages v = step_stages(tiger_v, false, false);
  CHECK(!v.reduce_sums && !v.reduce_flags && !v.rows && v.update, "Tiger V without the guard: the update only");
  StepHyper tiger_vg = tiger_v;
  tiger_vg.nonfinite_guard = true;
  const Stages vg = step_stages(tiger_vg, false, false);
  CHECK(!vg.reduce_sums && vg.reduce_flags, "Tiger V with the guard: flags only");

  const CallPlan ps = plan_call(ts, row0, rows, {}, {}, stats_stages());
  std::vector<int> seen_stats(ts.size(), 0);
  for (const KeyedLaunches& kl : ps.reduce) covered(kl.launches, seen_stats);
  bool no_step = true;
  for (const KeyedLaunches& kl : ps.reduce)
    for (const MtaArgs& a : kl.launches)
      for (int32_t j = 0; j < a.n; ++j) no_step &= a.t[j].step == nullptr;
  CHECK(ps.update.empty() && ps.counters.empty() && !ps.rows.empty() && no_step,
        "tiger_stats: stages 1 and 2 only, no step counters");
}

// ---- kernel selection -------------------------------------------------------------------------

static void test_kernel_key() {
  std::printf("kernel selection: kernel_key / dispatch_key / vec_width\n");
  const DType dtypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16};
  const Precision modes[] = {Precision::kNone, Precision::kKahan, Precision::kStochastic, Precision::kMaster};
  auto size_of = [](DType d) { return d == DType::kFloat64 ? 8 : d == DType::kFloat32 ? 4 : 2; };
  std::vector<KernelKey> distinct;
  Bulk b("every (param, momentum, mode) reaches the right instantiation");
  for (DType p : dtypes)
    for (DType m : dtypes) {
      if (m == DType::kFloat64 && p != DType::kFloat64) continue;
      for (Precision mode : modes) {
        const KernelKey k = kernel_key(tensor_of(1, 1, p, m, mode));
        const bool half = p == DType::kFloat16 || p == DType::kBFloat16;
        const DType want_m = p == DType::kFloat64 ? DType::kFloat64 : m;
        bool ok = k.param == p && k.momentum == want_m && k.mode == (half ? mode : Precision::kNone);
        int sp = 0, sm = 0, vec = 0;
        Precision got = Precision::kNone;
        bool p_half = false, m_bf16 = false;
        dispatch_key(k, [&](auto pt, auto mt, auto md) {
          using P = decltype(pt);
          using M = decltype(mt);
          sp = int(sizeof(P)), sm = int(sizeof(M)), got = decltype(md)::value, vec = vec_width<P, M>();
          p_half = std::is_same_v<P, half_t>, m_bf16 = std::is_same_v<M, bfloat16_t>;
        });
        ok &= sp == size_of(p) && sm == size_of(want_m) && got == k.mode && vec == 16 / std::min(sp, sm);
        ok &= p_half == (p == DType::kFloat16) && m_bf16 == (want_m == DType::kBFloat16);
        if (std::find(distinct.begin(), distinct.end(), k) == distinct.end()) distinct.push_back(k);
        if (ok) b.ok();
        else if (b.report()) std::printf("    %s/%s mode %d\n", dtype_name(p), dtype_name(m), int(mode));
      }
    }
  b.finish(__LINE__);
  CHECK(distinct.size() == 28, "%zu distinct instantiations", distinct.size());  // 3 fp32 + 1 fp64 + 2 * 12
}

// ---- the kernels' call-free arithmetic -----------------------------------------------------------

static float rand_float(Rng& r, int emin, int emax) {  // random sign, exponent and mantissa
  const int e = emin + int(r.u32() % uint32_t(emax - emin + 1));
  const float m = 1.0f + float(r.u32() >> 9) * 0x1p-23f;
  return (r.u32() & 1 ? -1.0f : 1.0f) * std::ldexp(m, e);
}

static bool same_float(float a, float b) { return (std::isnan(a) && std::isnan(b)) || fbits(a) == fbits(b); }
static bool same_double(double a, double b) {
  uint64_t x, y;
  std::memcpy(&x, &a, 8), std::memcpy(&y, &b, 8);
  return (std::isnan(a) && std::isnan(b)) || x == y;
}

static void test_arithmetic() {
  std::printf("call-free arithmetic: divides, divmod_u64, reciprocal_rn, div_by\n");
  Rng rng(5);
  Bulk d("divides(k, t) == (t % k == 0)");
  for (int64_t k = 1; k <= 40; ++k)
    for (int64_t t = -100; t <= 1000; ++t) (divides(k, t) == (t % k == 0)) ? d.ok() : void(d.report());
  for (int i = 0; i < 200000; ++i) {
    const int64_t k = int64_t(rng.next() >> (1 + rng.u32() % 63)) | 1;
    const int64_t t = int64_t(rng.next() >> 1) * (rng.u32() % 2 ? 1 : -1);
    if (divides(k, t) == (t % k == 0) && divides(k, t - t % k) && (k == 1 || !divides(k, t - t % k + 1))) d.ok();
    else if (d.report()) std::printf("    k %lld t %lld\n", (long long)k, (long long)t);
  }
  d.finish(__LINE__);
  Bulk dm("divmod_u64(a, d) == (a / d, a % d)");
  for (int i = 0; i < 200000; ++i) {
    const uint64_t dv = (rng.next() >> (1 + rng.u32() % 63)) | 1, a = rng.next() >> (rng.u32() % 64);
    const DivMod r = divmod_u64(a, dv);
    if (r.q == a / dv && r.r == a % dv) dm.ok();
    else if (dm.report()) std::printf("    a %llu d %llu\n", (unsigned long long)a, (unsigned long long)dv);
  }
  dm.finish(__LINE__);
  CHECK(tiger_first(8, 4) && !tiger_moves(8, 4) && tiger_moves(7, 4) && tiger_first(0, 1) && tiger_moves(0, 1));

  Bulk rc("reciprocal_rn(s) == RN(1 / s) (every exponent, specials)"), seed("... from an 8-bit seed");
  std::vector<float> scales = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1.0f, 3.0f, 1000.0f, 65536.0f, 0x1p-149f,
                               0x1.fffffep127f, 0x1p-126f, 0x1.fffffcp-127f};
  for (int e = -149; e <= 127; ++e)
    for (int k = 0; k < 40; ++k) scales.push_back(rand_float(rng, e, e));
  for (float s : scales) {
    const double y = reciprocal_rn(s);
    if (same_double(y, 1.0 / double(s))) rc.ok();
    else if (rc.report()) std::printf("    s %a: %a vs %a\n", double(s), y, 1.0 / double(s));
    if (!std::isfinite(s) || s == 0.0f) continue;
    int e = 0;
    const float mant = float(std::frexp(double(s), &e));
    const float crude = bitsf(fbits(1.0f / mant) & 0xFFFF8000u);  // 8 mantissa bits
    if (same_double(reciprocal_from_seed(double(s), std::ldexp(double(crude), -e)), 1.0 / double(s))) seed.ok();
    else if (seed.report()) std::printf("    s %a\n", double(s));
  }
  rc.finish(__LINE__);
  seed.finish(__LINE__);

  Bulk fq("div_by(float g, s) == g / s"), ties("... at exact fp32 subnormal ties"), dq("div_by(double g, s) == g / s");
  for (int i = 0; i < 2000000; ++i) {
    const float s = i % 7 == 0 ? scales[rng.u32() % scales.size()] : rand_float(rng, -30, 30);
    const float g = i % 11 == 0 ? scales[rng.u32() % scales.size()] : rand_float(rng, -149, 127);
    const float got = div_by(g, s, reciprocal_rn(s)), want = g / s;
    if (same_float(got, want)) fq.ok();
    else if (fq.report()) std::printf("    %a / %a: %a vs %a\n", double(g), double(s), double(got), double(want));
  }
  for (int odd : {3, 5, 7, 9, 11, 13, 1001, 4095})
    for (int e = -10; e <= 10; ++e)
      for (int j = 0; j < 3000; j += 1 + j / 16) {  // g / s = (2j+1) 2^-150 exactly: an fp32 tie
        const float s = std::ldexp(float(odd), e);
        const float g = std::ldexp(float((2 * j + 1) * odd), e - 150);
        if (double(g) != std::ldexp(double((2 * j + 1) * odd), e - 150)) continue;  // not representable
        const float got = div_by(g, s, reciprocal_rn(s)), want = g / s;
        if (same_float(got, want) && same_float(div_by(-g, s, reciprocal_rn(s)), -g / s)) ties.ok();
        else if (ties.report()) std::printf("    %a / %a: %a vs %a\n", double(g), double(s), double(got), double(want));
      }
  for (int i = 0; i < 2000000; ++i) {
    const float s = i % 5 == 0 ? scales[rng.u32() % scales.size()] : rand_float(rng, -40, 40);
    const double g = std::ldexp(double(rng.next() >> 11) * 0x1p-53 + 1.0, int(rng.u32() % 1600) - 800) *
                     (rng.u32() % 2 ? 1 : -1);
    const double got = div_by(g, double(s), reciprocal_rn(s)), want = g / double(s);
    if (same_double(got, want)) dq.ok();
    else if (dq.report()) std::printf("    %a / %a: %a vs %a\n", g, double(s), got, want);
  }
  fq.finish(__LINE__);
  ties.finish(__LINE__);
  dq.finish(__LINE__);
  CHECK(ties.cases > 1000, "%lld tie cases", ties.cases);
}

// ---- the block code on the CPU ----------------------------------------------------------------

// A host buffer whose data starts `misalign` bytes past a 16-byte boundary.
struct Buf {
  std::unique_ptr<unsigned char[]> mem;
  unsigned char* data = nullptr;
  size_t bytes = 0;
  Buf() = default;
  Buf(size_t n, size_t misalign) : mem(new unsigned char[n + 32]), bytes(n) {
    const uintptr_t base = (reinterpret_cast<uintptr_t>(mem.get()) + 15) & ~uintptr_t(15);
    data = reinterpret_cast<unsigned char*>(base) + misalign;
    std::memset(data, 0, n);
  }
};

static size_t size_of(DType d) {
  return d == DType::kFloat64 ? 8 : d == DType::kFloat32 ? 4 : d == DType::kCode8 ? 1 : 2;
}

template <typename F>
static void with_storage(DType d, F&& f) { dispatch_dtype(d, [&](auto tag) { f(decltype(tag){}); }); }

static void fill(Buf& b, DType d, int64_t n, Rng& rng, double scale, double shift = 0.0, const Buf* like = nullptr,
                 DType like_dtype = DType::kFloat32) {
  with_storage(d, [&](auto tag) {
    using S = decltype(tag);
    S* p = reinterpret_cast<S*>(b.data);
    for (int64_t i = 0; i < n; ++i) {
      const double u1 = (double(rng.u32()) + 1.0) * 0x1p-32, u2 = double(rng.u32()) * 0x1p-32;
      double v = shift + scale * std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
      if (like)  // a master copy: the parameter plus a little noise
        with_storage(like_dtype, [&](auto lt) {
          using L = decltype(lt);
          v += double(storage<L>::load(reinterpret_cast<const L*>(like->data), i));
        });
      storage<S>::store(p, i, typename storage<S>::opmath(v));
    }
  });
}

struct Shape {
  int64_t numel, row_len;  // row_len == numel: one row (Tiger E: the last dimension)
  size_t misalign;         // elements past a 16-byte boundary
  int64_t e_rows;          // Tiger E: rows in the plan's layout (a (3, 0) tensor has 3, and no elements)
};

// What the caller passes to tiger_step_ besides the tensors.
enum Given : int { kNoneGiven = 0, kGivenEta = 1, kGivenFlags = 2 };

struct Case {
  const char* name;
  Algo algo;
  TigerClass cls;
  DType p, m;
  Precision mode;
  int64_t k;             // Tiger: grad_accum_steps
  float grad_scale;      // 0: none
  bool found_inf, maximize, guard, nan_grad;
  int steps;
  bool lr_device;        // lr is a device tensor: StepCall::lr is 0 and the kernels read KernelScalars::lr
  double rms_floor;
  bool big_values;       // a gradient of 3e38 (non-finite once unscaled by 0.5), and a momentum near 65504
  int given;             // Given bits
  bool cautious = false;  // [note: cautious]
};

static bool tiger_e(const Case& c) { return c.algo == Algo::kTiger && c.cls == TigerClass::kE; }
static bool carries_sums(const Case& c) { return c.algo == Algo::kTiger && c.cls != TigerClass::kV; }
static int64_t plan_rows(const Case& c, const Shape& s) { return c.algo == Algo::kLion ? 0 : tiger_e(c) ? s.e_rows : 1; }

template <typename S>
static void put(Buf& b, int64_t i, double v) { storage<S>::store(reinterpret_cast<S*>(b.data), i, typename storage<S>::opmath(v)); }

// One call's tensors and state, built deterministically from a seed (so it can be built twice).
struct Problem {
  std::vector<Shape> shapes;
  std::vector<Buf> param, grad, mom, aux;
  std::vector<Buf> absmax;  // 8-bit momentum: float32 per block of kQ8Block (else empty)
  std::vector<int64_t> step;
  std::vector<std::vector<double>> sums;  // Tiger K/E: the carried sums (sumsq), a stale 7.0 to start
  Problem(const Case& c, const std::vector<Shape>& sh, uint64_t seed) : shapes(sh) {
    Rng rng(seed);
    const bool has_aux = (c.p == DType::kFloat16 || c.p == DType::kBFloat16) &&
                         (c.mode == Precision::kKahan || c.mode == Precision::kMaster);
    const DType aux_dtype = c.mode == Precision::kMaster ? DType::kFloat32 : c.p;
    for (size_t i = 0; i < sh.size(); ++i) {
      const int64_t n = sh[i].numel;
      param.emplace_back(size_t(n) * size_of(c.p), sh[i].misalign * size_of(c.p));
      grad.emplace_back(size_t(n) * size_of(c.p), sh[i].misalign * size_of(c.p));
      mom.emplace_back(size_t(n) * size_of(c.m), sh[i].misalign * size_of(c.m));
      aux.emplace_back(has_aux ? size_t(n) * size_of(aux_dtype) : 0, sh[i].misalign * size_of(aux_dtype));
      fill(param[i], c.p, n, rng, 0.5, i % 3 == 0 ? 0.0 : 0.05);
      fill(grad[i], c.p, n, rng, 1.0);
      const int64_t q8_blocks = c.m == DType::kCode8 ? (n + kQ8Block - 1) / kQ8Block : 0;
      absmax.emplace_back(size_t(q8_blocks) * sizeof(float), 0);
      if (c.m == DType::kCode8) {  // random codes and scales; tensor 2's block 0 all zero.
        // No NaN code (0x80): a NaN momentum makes NaN parameters, whose sign and payload the two
        // compiled paths need not agree on (the Python tests compare NaN as NaN).
        for (int64_t j = 0; j < n; ++j) {
          const uint8_t code = uint8_t(rng.u32());
          mom[i].data[j] = code == kQ8NanCode ? uint8_t(0) : code;
        }
        float* a = reinterpret_cast<float*>(absmax[i].data);
        for (int64_t b = 0; b < q8_blocks; ++b) a[b] = float(0.05 + 0.1 * double(rng.u32()) * 0x1p-32);
        if (i == 2 && q8_blocks > 0) {
          a[0] = 0.0f;
          for (int64_t j = 0; j < std::min<int64_t>(n, kQ8Block); ++j) mom[i].data[j] = 0;
        }
      } else {
        fill(mom[i], c.m, n, rng, 0.1);
      }
      if (has_aux && c.mode == Precision::kKahan) fill(aux[i], c.p, n, rng, 1e-3);
      if (has_aux && c.mode == Precision::kMaster) fill(aux[i], DType::kFloat32, n, rng, 1e-3, 0.0, &param[i], c.p);
      with_storage(c.p, [&](auto tag) {
        using P = decltype(tag);
        if (c.nan_grad && i == 1 && n > 3) put<P>(grad[i], n / 2, NAN);
        if (c.big_values && i == 2 && n > 3) put<P>(grad[i], 0, 3e38);  // fp16: Inf
        if (c.big_values && i == 0 && n > 0) put<P>(grad[i], 0, 60000.0);
      });
      if (c.big_values && i == 0 && n > 0 && c.m != DType::kCode8)  // (1-b) 60000 / 0.5 takes an fp16 momentum past 65504
        with_storage(c.m, [&](auto tag) { put<decltype(tag)>(mom[i], 0, 65000.0); });
      step.push_back(0);
      sums.push_back(std::vector<double>(carries_sums(c) ? size_t(plan_rows(c, sh[i])) : 0, 7.0));
    }
  }
  bool same_as(const Problem& o, const char* what_fmt, const char* name) const {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Buf* a[] = {&param[i], &grad[i], &mom[i], &aux[i], &absmax[i]};
      const Buf* b[] = {&o.param[i], &o.grad[i], &o.mom[i], &o.aux[i], &o.absmax[i]};
      for (int k = 0; k < 5; ++k)
        if (a[k]->bytes != 0 && std::memcmp(a[k]->data, b[k]->data, a[k]->bytes) != 0) {
          size_t j = 0;
          while (a[k]->data[j] == b[k]->data[j]) ++j;
          std::printf(what_fmt, name, i, k, j);
          return false;
        }
      if (step[i] != o.step[i]) return false;
    }
    return true;
  }
};

// The call as host::lion_hyper / tiger_hyper and plan_step (csrc/host/step_plan.cpp) make it.
static StepCall base_call(const Case& c) {
  const bool tiger = c.algo == Algo::kTiger;
  StepHyper h{};
  h.algo = c.algo;
  h.maximize = c.maximize;
  h.seed = 1234;
  h.beta1 = tiger ? 0.0 : 0.9, h.beta2 = tiger ? 0.0 : 0.99, h.beta = tiger ? 0.965 : 0.0;
  h.grad_accum_steps = tiger ? c.k : 1;
  h.tiger_class = c.cls;
  h.shrink_ratio = tiger ? 0.99 : 1.0, h.shrink_center = tiger && c.cls == TigerClass::kV ? 1.0 : 0.0;
  h.rms_floor = tiger ? c.rms_floor : 0.0;
  h.nonfinite_guard = tiger && c.guard;
  h.weight_decay = tiger && c.cls == TigerClass::kV ? 0.0 : 0.1;
  h.cautious = c.cautious;
  StepCall call{};
  call.hyper = h;
  call.coef = derive_coefficients(h);
  call.lr = tiger ? 2e-3 : 1e-3;
  call.has_grad_scale = c.grad_scale != 0.0f;
  call.grad_scale = c.grad_scale != 0.0f ? double(c.grad_scale) : 1.0;
  return call;
}

// The tensor descriptions host::plan_step makes of a problem: StepPlan::tensors, row0 and rows.
struct Described {
  std::vector<StepTensor> tensors;
  std::vector<int64_t> row0;
  int64_t rows = 0;
};
static Described describe(const Case& c, Problem& pr, bool read_steps) {
  Described out;
  const bool half = c.p == DType::kFloat16 || c.p == DType::kBFloat16;
  for (size_t i = 0; i < pr.shapes.size(); ++i) {
    StepTensor t{};
    t.caution_scale = 1.0;
    t.param_dtype = c.p, t.momentum_dtype = c.m, t.mode = half ? c.mode : Precision::kNone;
    t.param = pr.param[i].data, t.grad = pr.grad[i].data, t.exp_avg = pr.mom[i].data;
    t.aux = (t.mode == Precision::kKahan || t.mode == Precision::kMaster) ? pr.aux[i].data : nullptr;
    t.absmax = c.m == DType::kCode8 ? reinterpret_cast<float*>(pr.absmax[i].data) : nullptr;
    t.numel = pr.shapes[i].numel, t.row_len = pr.shapes[i].row_len;
    t.param_id = uint32_t(7 + i), t.step = read_steps ? pr.step[i] : 0, t.update = true;
    t.elem_offset = i % 2 ? int64_t(i) * 4099 + 3 : 0;  // odd tensors: a shard's flat offset (not a multiple of 4)
    out.tensors.push_back(t);
    out.row0.push_back(out.rows);
    out.rows += plan_rows(c, pr.shapes[i]);
  }
  return out;
}

// A caller's inputs: step sizes (distinct per row, unlike anything the call would compute) and
// flags (tensors 0 and 1: tensor 0's gradient is finite, tensor 1 holds the NaN when there is one).
static std::vector<double> caller_eta(int64_t rows) {
  std::vector<double> e(size_t(rows) + 1);
  for (int64_t r = 0; r <= rows; ++r) e[size_t(r)] = 1e-3 * (1.0 + double(r % 5) / 4.0);
  return e;
}
static std::vector<int32_t> caller_flags(const Case& c, size_t n) {
  std::vector<int32_t> f(n + 1, 0);
  for (size_t i = 0; i < n; ++i) f[i] = !c.guard || i < 2;  // guard off: all set, and all ignored
  return f;
}
static bool uses_given_eta(const Case& c) { return (c.given & kGivenEta) && c.algo == Algo::kTiger && c.cls != TigerClass::kV; }
static bool uses_given_flags(const Case& c) { return (c.given & kGivenFlags) && c.algo == Algo::kTiger && c.guard; }

struct Coverage {
  long long aligned_chunks = 0, scalar_chunks = 0, q8_aligned_chunks = 0, q8_scalar_chunks = 0, launches = 0, multi_launch_calls = 0, warp_slots = 0,
            block_slots = 0;
};

// Stage 1 of one launch group: the kernel's per-thread parts (SlotPart, sign_step_block.h) with the
// thread layout of tiger_reduce_kernel (a warp per slot-row when a chunk has >= 8 rows, else the
// block), and the parts added in thread order where the kernel uses CUB's tree.
static void emulate_reduce(const KeyedLaunches& kl, const StepCall& call, const KernelScalars& d, Coverage& cov) {
  const bool master = kl.key.mode == Precision::kMaster;
  constexpr int kWarps = kBlockSize / 32;
  for (const MtaArgs& a : kl.launches)
    for (int64_t b = 0; b < a.block_start[a.n]; ++b) {
      if (step_skipped(d)) continue;
      const ReduceJob job = reduce_job(a, call, d, b);
      if (!job.want_sum && !job.want_flag) continue;
      const Span& s = job.s;
      bool bad = false;
      auto run = [&](auto part) {
        const bool warps = s.nrows >= kWarps;
        const int threads = warps ? 32 : kBlockSize;
        for (int32_t r = 0; r < s.nrows; ++r) {
          std::vector<double> parts(size_t(threads), 0.0);
          for (int tid = 0; tid < threads; ++tid)
            part.add(r * s.rlen + tid, (r + 1) * s.rlen, threads, d.grad_scale, parts[size_t(tid)], bad);
          double total = 0.0;
          for (double x : parts) total += x;
          if (job.want_sum) d.slot_sums[job.t->slot0 + s.slot + r] = total;
          (warps ? cov.warp_slots : cov.block_slots) += 1;
        }
      };
      with_storage(kl.key.param, [&](auto tag) {
        using P = decltype(tag);
        if (master) run(slot_part<float, P>(job, true));
        else run(slot_part<P, P>(job, false));
      });
      if (job.want_flag && bad) d.flags[job.t->ordinal] |= 1;
    }
}

// Every block and thread of every launch of a plan, stage by stage, as optim_step.cu's run()
// launches them on one stream.
static void emulate_plan(const CallPlan& cp, const StepCall& call, const KernelScalars& d, Coverage& cov) {
  auto blocks = [](const MtaArgs& a) { return int64_t(a.block_start[a.n]); };
  auto count = [&](size_t launches) {
    cov.launches += int64_t(launches);
    cov.multi_launch_calls += launches > 1;
  };
  for (const KeyedLaunches& kl : cp.reduce) emulate_reduce(kl, call, d, cov), count(kl.launches.size());
  for (const MtaArgs& a : cp.rows)
    for (int64_t b = 0; b < blocks(a); ++b)
      for (int tid = 0; tid < kBlockSize; ++tid) tiger_rows_block(a, call, d, b, tid, kBlockSize);
  for (const KeyedLaunches& kl : cp.caution) {  // caution.cu: counts, then scales
    count(kl.launches.size());
    dispatch_key_or_code8(kl.key, [&](auto pt, auto mt_, auto) {
      for (const MtaArgs& a : kl.launches)
        for (int64_t b = 0; b < blocks(a) && !step_skipped(d); ++b) {
          uint64_t kept = 0;
          for (int tid = 0; tid < kBlockSize; ++tid)
            kept += caution_count_part<decltype(pt), decltype(mt_)>(a, call, d, b, tid, kBlockSize);
          d.caution_kept[a.t[locate_block(a, b).tensor].ordinal] += kept;
        }
    });
  }
  for (const KeyedLaunches& kl : cp.caution)
    for (const MtaArgs& a : kl.launches)
      if (!step_skipped(d)) caution_scales_part(a, d, 0, 1);
  for (const KeyedLaunches& kl : cp.update) {
    count(kl.launches.size());
    dispatch_key_or_code8(kl.key, [&](auto pt, auto mt_, auto md) {
      using P = decltype(pt);
      using M = decltype(mt_);
      constexpr Precision kMode = decltype(md)::value;
      for (const MtaArgs& a : kl.launches)
        for (int64_t b = 0; b < blocks(a); ++b) {
          const bool aligned = Block<P, M, kMode>(a, call, b).aligned;
          if (std::is_same<M, code8_t>::value) (aligned ? cov.q8_aligned_chunks : cov.q8_scalar_chunks) += 1;
          else (aligned ? cov.aligned_chunks : cov.scalar_chunks) += 1;
          for (int tid = 0; tid < kBlockSize; ++tid) {  // the instantiation launch_update picks
            if (call.hyper.algo == Algo::kTiger && call.hyper.cautious)
              tiger_block<P, M, kMode, CautionUse::kOn>(a, call, d, b, tid, kBlockSize);
            else if (call.hyper.algo == Algo::kTiger)
              tiger_block<P, M, kMode, CautionUse::kOff>(a, call, d, b, tid, kBlockSize);
            else if (call.hyper.cautious)
              lion_block<P, M, kMode, CautionUse::kOn>(a, call, d, b, tid, kBlockSize);
            else
              lion_block<P, M, kMode, CautionUse::kOff>(a, call, d, b, tid, kBlockSize);
          }
        }
    });
  }
  for (const CounterArgs& a : cp.counters)
    for (int32_t j = 0; j < a.n; ++j)
      for (int tid = 0; tid < kCounterThreads; ++tid) finish_tensor(a, d.found_inf, j, tid, kCounterThreads);
}

// A workspace as the entry allocates it: uninitialised (here: all bits set, so doubles are NaN and
// flags read as fired unless zeroed), with the flags zeroed when the call computes them.
struct Workspace {
  std::vector<double> mem;
  void attach(const CallPlan& cp, KernelScalars& d) {
    if (!cp.needs_workspace()) return;
    mem.assign(cp.ws.bytes() / sizeof(double) + 1, 0.0);
    std::memset(mem.data(), 0xFF, mem.size() * sizeof(double));
    int32_t* zero = use_workspace(cp.ws, reinterpret_cast<unsigned char*>(mem.data()), d);
    if (zero != nullptr) std::memset(zero, 0, size_t(cp.ws.tensors) * sizeof(int32_t));
    if (cp.ws.caution) std::memset(d.caution_kept, 0, size_t(cp.ws.tensors) * sizeof(uint64_t));
  }
};

struct StepOut {
  std::vector<double> eta;     // the step sizes the update read (stage 2's, or the caller's)
  std::vector<int32_t> flags;  // the guard flags the update read
  bool sums_unknown = true;    // every carried sum is -1 after the step
};

// One step of the CUDA launch layer, emulated: optim_step.cu's entry (stages, device inputs,
// workspace), then every block and thread of every launch.
static StepOut emulated_step(const Case& c, Problem& pr, Coverage& cov) {
  const Described ds = describe(c, pr, /*read_steps=*/false);
  StepCall call = base_call(c);
  const double lr = call.lr;
  if (c.lr_device) call.lr = 0.0;  // as plan_step: the value lives on the device
  const float found_inf = c.found_inf ? 1.0f : 0.0f, grad_scale = c.grad_scale;
  KernelScalars d{};
  d.found_inf = &found_inf;
  d.grad_scale = c.grad_scale != 0.0f ? &grad_scale : nullptr;
  d.lr = c.lr_device ? &lr : nullptr;
  std::vector<double> eta = caller_eta(ds.rows);
  std::vector<int32_t> flags = caller_flags(c, ds.tensors.size());
  if (uses_given_eta(c)) d.eta_rows = eta.data();
  if (uses_given_flags(c)) d.flags = flags.data();
  std::vector<int64_t*> steps;
  std::vector<double*> carried;
  for (size_t i = 0; i < ds.tensors.size(); ++i) {
    steps.push_back(&pr.step[i]);
    if (carries_sums(c)) carried.push_back(pr.sums[i].data());
  }
  const Stages st = step_stages(call.hyper, uses_given_eta(c), uses_given_flags(c));
  const CallPlan cp = plan_call(ds.tensors, ds.row0, ds.rows, steps, carried, st);
  d.reduce_sums = st.reduce_sums, d.reduce_flags = st.reduce_flags;
  Workspace ws;
  ws.attach(cp, d);
  emulate_plan(cp, call, d, cov);
  StepOut out;
  if (d.eta_rows != nullptr) out.eta.assign(d.eta_rows, d.eta_rows + ds.rows);
  if (d.flags != nullptr) out.flags.assign(d.flags, d.flags + ds.tensors.size());
  for (const auto& s : pr.sums)
    for (double v : s) out.sums_unknown &= v == -1.0;
  return out;
}

// The same step with the CPU kernels (csrc/cpu/optim_kernels.h) as optim_ops.cpp drives them, given
// the step sizes the CUDA update read (stage 2's are checked against a direct computation by
// etas_match). Returns whether each tensor's guard fired (the caller's flag, or the CPU's check).
static std::vector<char> reference_step(const Case& c, Problem& pr, const std::vector<double>& eta) {
  std::vector<char> fired(pr.shapes.size(), 0);
  if (c.found_inf) return fired;  // nothing moves, not even the step
  Described ds = describe(c, pr, /*read_steps=*/true);
  const StepCall call = base_call(c);
  const std::vector<int32_t> given = caller_flags(c, ds.tensors.size());
  const std::vector<double> given_eta = caller_eta(ds.rows);
  for (size_t i = 0; i < ds.tensors.size(); ++i) {
    StepTensor& t = ds.tensors[i];
    if (c.cautious && t.numel > 0)  // as optim_ops.cpp's caution_scales (one range: the count is exact)
      t.caution_scale = caution_scale_of(t.numel, cpu::cpu_ref::caution_count(call, t, 0, t.numel));
    if (c.algo == Algo::kTiger) {
      t.update = tiger_is_update_step(t.step, call.hyper.grad_accum_steps);
      fired[i] = uses_given_flags(c) ? given[i] != 0
                                     : !cpu::cpu_ref::all_finite(t.param_dtype, t.grad, 0, t.numel,
                                                                 call.has_grad_scale, call.grad_scale);
      t.shrink = call.hyper.nonfinite_guard && fired[i];
      const double* e = uses_given_eta(c) ? given_eta.data() : eta.data();
      if (c.cls == TigerClass::kV) t.eta = 0.5 * call.lr;
      else if (t.numel > 0 && c.cls == TigerClass::kK) t.eta = e[ds.row0[i]];
      else if (t.numel > 0) t.eta_rows = e + ds.row0[i];
      if (t.numel > 0) cpu::cpu_ref::sign_step(call, t, 0, t.numel, nullptr);
    } else if (t.numel > 0) {
      cpu::cpu_ref::sign_step(call, t, 0, t.numel, nullptr);
    }
    ++pr.step[i];
  }
  return fired;
}

// Stage 2's step sizes against sums computed directly over each row (sequential, fp64), for every
// tensor that moves; the floor and the (possibly device) lr included.
static bool etas_match(const Case& c, Problem& before, const std::vector<double>& eta, const std::vector<char>& fired) {
  if (c.algo != Algo::kTiger || c.cls == TigerClass::kV || c.found_inf || uses_given_eta(c)) return true;
  const Described ds = describe(c, before, /*read_steps=*/true);
  const StepCall call = base_call(c);
  for (size_t i = 0; i < ds.tensors.size(); ++i) {
    const StepTensor& t = ds.tensors[i];
    if (!tiger_is_update_step(t.step, c.k) || (c.guard && fired[i])) continue;
    const Grid g = grid_of(t.numel, t.row_len);
    const bool master = t.mode == Precision::kMaster;
    for (int64_t r = 0; r < g.rows; ++r) {
      double s = 0.0;
      with_storage(master ? DType::kFloat32 : c.p, [&](auto tag) {
        using S = decltype(tag);
        for (int64_t j = r * t.row_len; j < (r + 1) * t.row_len; ++j) {
          const double x = double(storage<S>::load(static_cast<const S*>(master ? t.aux : t.param), j));
          s += x * x;
        }
      });
      const double want = tiger_eta_from_sumsq(call.lr, s, t.row_len, c.rms_floor);
      const double got = eta[size_t(ds.row0[i] + r)];
      if (!(std::fabs(got - want) <= 1e-12 * std::fabs(want))) return false;
    }
  }
  return true;
}

static std::vector<Shape> shapes_for(const Case& c) {
  const size_t mis = 1;  // one element past a 16-byte boundary
  std::vector<Shape> s;
  if (tiger_e(c)) {
    // (3, 0): no elements but 3 rows in the plan's layout, so the rows after it are offset by 3
    s = {{768 * 90, 768, 0, 90}, {7 * 100, 7, 0, 100}, {2 * 70001, 70001, 0, 2}, {0, 0, 0, 3},
         {64 * 33, 64, mis, 33}, {16, 16, 0, 1}, {0, 0, 0, 0}};
  } else {
    s = {{1, 1, 0, 1}, {7, 7, 0, 1}, {4097, 4097, 0, 1}, {2 * kChunk + 3, 2 * kChunk + 3, 0, 1},
         {1001, 1001, mis, 1}, {0, 0, 0, 1}};
    for (int i = 0; i < 45; ++i) s.push_back({3 + i % 9, 3 + i % 9, i % 4 == 0 ? mis : 0, 1});  // > kMaxTensors
  }
  return s;
}

struct AlgoCase {
  const char* name;
  Algo algo;
  TigerClass cls;
};
static const AlgoCase kAlgos[] = {{"lion", Algo::kLion, TigerClass::kK}, {"tigerK", Algo::kTiger, TigerClass::kK},
                                  {"tigerE", Algo::kTiger, TigerClass::kE}, {"tigerV", Algo::kTiger, TigerClass::kV}};
static const DType kDtypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16};
static const Precision kModes[] = {Precision::kNone, Precision::kKahan, Precision::kStochastic, Precision::kMaster};
static const DType kMomentumDtypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16,
                                        DType::kCode8};

static void test_blocks_against_cpu() {
  std::printf("CUDA block code run on the CPU vs the CPU kernels (bitwise)\n");
  Bulk same("updated param/grad/momentum/aux/step identical to the CPU kernels");
  Bulk flags("guard flags identical to the CPU's check");
  Bulk etas("stage-2 step sizes equal direct per-row RMS (device lr, rms_floor)");
  Bulk sums("carried sums marked unknown (-1) after every CUDA step");
  Coverage cov;
  int combos = 0, cases = 0;
  for (const AlgoCase& al : kAlgos)
    for (DType p : kDtypes)
      for (DType m : kMomentumDtypes) {
        if (m != DType::kCode8 && (m == DType::kFloat64) != (p == DType::kFloat64)) continue;
        for (Precision mode : kModes) {
          const bool half = p == DType::kFloat16 || p == DType::kBFloat16;
          if (!half && mode != Precision::kNone) continue;
          ++combos;
          const bool tiger = al.algo == Algo::kTiger;
          const Case base{al.name, al.algo, al.cls, p, m, mode, 1, 0.0f, false, false, false, false, 2, false, 0.0,
                          false, kNoneGiven};
          std::vector<Case> variants;
          auto add = [&](auto edit) {
            Case c = base;
            edit(c);
            variants.push_back(c);
          };
          add([](Case&) {});  // plain
          add([](Case& c) { c.grad_scale = 1024.0f, c.maximize = true, c.guard = true; });
          // GradScaler 1000, guard with a NaN, accumulation (k = 2: a momentum-only step, then an update)
          add([&](Case& c) { c.k = 2, c.grad_scale = 1000.0f, c.guard = true, c.nan_grad = tiger; });
          add([&](Case& c) { c.grad_scale = 65536.0f, c.found_inf = true, c.guard = true, c.nan_grad = tiger, c.steps = 1; });
          // lr on the device, a floor above the RMS, unscaling by 0.5 to Inf, fp16 momentum saturation
          add([&](Case& c) { c.grad_scale = 0.5f, c.guard = true, c.lr_device = true, c.rms_floor = 0.6, c.big_values = true; });
          // cautious masking: plain; and with GradScaler, maximize, accumulation, the guard and a device lr
          add([](Case& c) { c.cautious = true; });
          add([&](Case& c) { c.cautious = true, c.grad_scale = 1000.0f, c.maximize = true, c.k = 2, c.guard = true,
                             c.nan_grad = tiger, c.lr_device = true, c.steps = 4; });
          if (tiger) {
            add([](Case& c) { c.grad_scale = 1000.0f, c.guard = true, c.nan_grad = true, c.given = kGivenEta | kGivenFlags; });
            add([](Case& c) { c.given = kGivenEta | kGivenFlags, c.steps = 1; });  // guard off: flags ignored
            add([](Case& c) { c.k = 2, c.guard = true, c.nan_grad = true, c.lr_device = true, c.given = kGivenEta; });
            add([](Case& c) { c.guard = true, c.nan_grad = true, c.given = kGivenFlags; });
          }
          for (const Case& c : variants) {
            ++cases;
            const auto shapes = shapes_for(c);
            const uint64_t seed = 1000 + uint64_t(cases);
            Problem emu(c, shapes, seed), ref(c, shapes, seed), before(c, shapes, seed);
            bool ok = true, fok = true, eok = true, sok = true;
            for (int s = 0; s < c.steps; ++s) {
              const StepOut out = emulated_step(c, emu, cov);
              const std::vector<char> fired = reference_step(c, ref, out.eta);
              eok &= etas_match(c, before, out.eta, fired);
              if (c.guard && c.algo == Algo::kTiger && !c.found_inf)
                for (size_t i = 0; i < fired.size(); ++i) fok &= (out.flags[i] != 0) == (fired[i] != 0);
              sok &= out.sums_unknown;
              ok &= emu.same_as(ref, "    %s: tensor %zu array %d differs at byte %zu\n", c.name);
              reference_step(c, before, out.eta);  // `before` follows, for the next step's direct RMS
            }
            auto note = [&](Bulk& b, bool good) {
              if (good) b.ok();
              else if (b.report())
                std::printf("    %s %s/%s mode %d k %lld scale %g found_inf %d guard %d lr_device %d given %d\n", c.name,
                            dtype_name(c.p), dtype_name(c.m), int(c.mode), (long long)c.k, double(c.grad_scale),
                            c.found_inf, c.guard, c.lr_device, c.given);
            };
            note(same, ok);
            note(flags, fok);
            note(etas, eok);
            note(sums, sok);
          }
        }
      }
  same.finish(__LINE__);
  flags.finish(__LINE__);
  etas.finish(__LINE__);
  sums.finish(__LINE__);
  std::printf("  %d (algo, dtype, momentum, mode) combinations, %d cases; %lld vector-path chunks, %lld scalar-path "
              "chunks (8-bit momentum: %lld, %lld), %lld launches (%lld groups needed several), stage-1 slot-rows: %lld by warps, %lld by blocks\n",
              combos, cases, cov.aligned_chunks, cov.scalar_chunks, cov.q8_aligned_chunks, cov.q8_scalar_chunks, cov.launches, cov.multi_launch_calls,
              cov.warp_slots, cov.block_slots);
  CHECK(combos == 4 * (28 + 10) && cov.q8_aligned_chunks > 0 && cov.q8_scalar_chunks > 0 && cov.aligned_chunks > 0 && cov.scalar_chunks > 0 && cov.multi_launch_calls > 0 &&
        cov.warp_slots > 0 && cov.block_slots > 0);
}

// tiger_stats: the stats plan's blocks (stage 1 for every tensor, stage 2 writing sums) against a
// direct float64 sum of squares per row and a finiteness check by real division.
static void test_stats() {
  std::printf("tiger_stats blocks vs a direct float64 sum and an independent finiteness check\n");
  Bulk sums("per-row sums of squares of the working copy (empty tensors and rows: 0)");
  Bulk flags("per-tensor flags: some g / grad_scale is NaN or +-Inf");
  Coverage cov;
  int fired = 0, clear = 0;
  for (TigerClass cls : {TigerClass::kK, TigerClass::kE, TigerClass::kV})
    for (DType p : kDtypes)
      for (Precision mode : kModes) {
        const bool half = p == DType::kFloat16 || p == DType::kBFloat16;
        if (!half && mode != Precision::kNone) continue;
        for (float scale : {0.0f, 1024.0f, 0.5f}) {
          const DType m = p == DType::kFloat64 ? DType::kFloat64 : DType::kFloat32;
          const Case c{"stats", Algo::kTiger, cls, p, m, mode, 1, scale, false, false, true, scale == 1024.0f, 1,
                       false, 0.0, true, kNoneGiven};
          Problem pr(c, shapes_for(c), 77 + uint64_t(cls) * 100 + uint64_t(p) * 10 + uint64_t(mode));
          Described ds = describe(c, pr, false);
          for (StepTensor& t : ds.tensors) {  // as tiger_stats_cuda describes them
            t.momentum_dtype = DType::kFloat32, t.exp_avg = nullptr;
            if (t.mode != Precision::kMaster) t.aux = nullptr;
          }
          StepCall call{};
          call.hyper.algo = Algo::kTiger, call.hyper.tiger_class = cls, call.hyper.grad_accum_steps = 1;
          const float gs = scale;
          std::vector<double> out(size_t(ds.rows), 0.0);
          std::vector<int32_t> fl(ds.tensors.size(), 0);
          KernelScalars d{};
          d.grad_scale = scale != 0.0f ? &gs : nullptr;
          d.stats_sums = out.data(), d.flags = fl.data();
          const Stages st = stats_stages();
          const CallPlan cp = plan_call(ds.tensors, ds.row0, ds.rows, {}, {}, st);
          d.reduce_sums = st.reduce_sums, d.reduce_flags = st.reduce_flags;
          Workspace ws;
          ws.attach(cp, d);
          emulate_plan(cp, call, d, cov);
          bool sok = true, fok = true;
          for (size_t i = 0; i < ds.tensors.size(); ++i) {
            const StepTensor& t = ds.tensors[i];
            const bool master = t.mode == Precision::kMaster;
            const int64_t rows = plan_rows(c, pr.shapes[i]);
            const int64_t rlen = rows > 0 ? t.numel / rows : 0;
            for (int64_t r = 0; r < rows; ++r) {
              double want = 0.0;
              with_storage(master ? DType::kFloat32 : p, [&](auto tag) {
                using S = decltype(tag);
                for (int64_t j = r * rlen; j < (r + 1) * rlen; ++j) {
                  const double x = double(storage<S>::load(static_cast<const S*>(master ? t.aux : t.param), j));
                  want += x * x;
                }
              });
              const double got = out[size_t(ds.row0[i] + r)];
              sok &= want == 0.0 ? got == 0.0 : std::fabs(got - want) <= 1e-13 * want;
            }
            bool bad = false;
            with_storage(p, [&](auto tag) {
              using P = decltype(tag);
              using T = typename storage<P>::opmath;
              for (int64_t j = 0; j < t.numel; ++j) {
                T g = storage<P>::load(static_cast<const P*>(t.grad), j);
                if (scale != 0.0f) g = g / T(scale);
                bad |= !std::isfinite(g);
              }
            });
            fok &= (fl[i] != 0) == bad;
            (bad ? fired : clear) += 1;
          }
          auto note = [&](Bulk& b, bool good) {
            if (good) b.ok();
            else if (b.report())
              std::printf("    class %d %s mode %d scale %g\n", int(cls), dtype_name(p), int(mode), double(scale));
          };
          note(sums, sok);
          note(flags, fok);
        }
      }
  sums.finish(__LINE__);
  flags.finish(__LINE__);
  std::printf("  %d tensors flagged, %d not\n", fired, clear);
  CHECK(fired > 0 && clear > 0 && cov.warp_slots > 0 && cov.block_slots > 0);
}

int main() {
  test_geometry();
  test_plan();
  test_stages();
  test_kernel_key();
  test_arithmetic();
  test_blocks_against_cpu();
  test_stats();
  std::printf("test_mta: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
