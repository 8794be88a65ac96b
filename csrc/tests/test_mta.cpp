// test_mta.cpp — the CUDA launch layer, tested on the CPU (no GPU, no torch): the host planning,
// argument packing and kernel selection (mta_plan.h, kernel_key.h), the call-free arithmetic of
// the kernels (divides, reciprocal_rn, div_by), and the CUDA block code itself (sign_step_block.h):
// every block and thread of every launch runs on the CPU and its results are compared bit for bit
// with the CPU kernels (csrc/cpu/optim_kernels.h) for every dtype, momentum dtype, precision mode,
// Tiger class, GradScaler and guard case. Build and run: ctest, or by hand
//   g++ -std=c++20 -O2 -ffp-contract=off -Icsrc/include -Icsrc csrc/tests/test_mta.cpp && ./a.out
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#define TC_ISA cpu_ref  // the CPU kernels, compiled once more here as the reference
#include "cpu/optim_kernels.h"
#include "tigercore/kernel_key.h"
#include "tigercore/mta_plan.h"
#include "tigercore/sign_step_block.h"
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
  CHECK(grid_of(0, 0).chunks == 0 && grid_of(0, 5).chunks == 0);
  CHECK(grid_of(768 * 100, 768).rows_per_chunk == 85 && grid_of(768 * 100, 768).chunks == 2);
  CHECK(grid_of(3 * 70001, 70001).pieces == 2 && grid_of(3 * 70001, 70001).chunks == 6);
}

// ---- planning and packing -----------------------------------------------------------------------

static void test_plan() {
  std::printf("launch planning and argument packing\n");
  static_assert(sizeof(MtaArgs) + sizeof(SignStepCall) + sizeof(KernelScalars) <= kMaxKernelArgBytes,
                "kernel arguments must stay under 4 KB");
  static_assert(std::is_trivially_copyable_v<MtaArgs> && std::is_trivially_copyable_v<KernelScalars> &&
                std::is_trivially_copyable_v<StepArgs>);
  std::printf("  sizeof: MtaArgs %zu, SignStepCall %zu, KernelScalars %zu, StepArgs %zu (limit %zu)\n", sizeof(MtaArgs),
              sizeof(SignStepCall), sizeof(KernelScalars), sizeof(StepArgs), kMaxKernelArgBytes);
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
  for (int count : {0, 1, kMaxSteps - 1, kMaxSteps, kMaxSteps + 1, 1000}) {
    std::vector<int64_t*> ptrs;
    for (int i = 0; i < count; ++i) ptrs.push_back(&counters[i]);
    const auto packs = pack_steps(ptrs);
    bool ok = int(packs.size()) == (count + kMaxSteps - 1) / kMaxSteps;
    int k = 0;
    for (const StepArgs& s : packs)
      for (int32_t i = 0; i < s.n; ++i) ok &= s.step[i] == ptrs[size_t(k++)];
    CHECK(ok && k == count, "pack_steps(%d)", count);
  }

  const auto groups = group_by<int>(7, [](int32_t i) { return (i * 5) % 3; });
  CHECK(groups.size() == 3 && groups[0].first == 0 && groups[1].first == 2 && groups[2].first == 1 &&
        groups[0].second == std::vector<int32_t>({0, 3, 6}) && groups[1].second == std::vector<int32_t>({1, 4}));

  std::vector<SignStepTensor> ts(3);
  ts[0].numel = 768 * 10, ts[0].row_len = 768;         // 10 rows, 1 piece each
  ts[1].numel = 0, ts[1].row_len = 0;                  // empty
  ts[2].numel = 3 * kChunk + 1, ts[2].row_len = ts[2].numel;  // 1 row, 4 pieces
  const WorkspaceLayout w = workspace_layout(ts);
  CHECK(w.slot0 == std::vector<int64_t>({0, 10, 10}) && w.row0 == std::vector<int64_t>({0, 10, 10}) && w.slots == 14 &&
        w.rows == 11 && w.bytes() == 14 * 8 + 11 * 8 + 3 * 4);
  CHECK(update_blocks(ts[0]) == 1 && update_blocks(ts[1]) == 0 && update_blocks(ts[2]) == 4 && eta_blocks(ts[0]) == 1);

  alignas(16) static unsigned char buf[64];
  MtaTensor t{{buf, buf + 16, buf + 32, nullptr}, 0, 0, nullptr, 0, 0, 0, 0};
  CHECK(chunk_is_aligned(t, 0, 4) && chunk_is_aligned(t, 8, 8) && !chunk_is_aligned(t, 2, 4));
  t.ptr[3] = buf + 2;
  CHECK(!chunk_is_aligned(t, 0, 4));
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
        SignStepCall c{};
        c.param_dtype = p, c.momentum_dtype = m, c.precision = mode;
        const KernelKey k = kernel_key(c);
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
  std::printf("call-free arithmetic: divides, reciprocal_rn, div_by\n");
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

static size_t size_of(DType d) { return d == DType::kFloat64 ? 8 : d == DType::kFloat32 ? 4 : 2; }

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
  int64_t numel, row_len;  // row_len == numel: one row
  size_t misalign;         // elements past a 16-byte boundary
};

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
};

// One call's tensors and state, built deterministically from a seed (so it can be built twice).
struct Problem {
  std::vector<Shape> shapes;
  std::vector<Buf> param, grad, mom, aux;
  std::vector<int64_t> step;
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
      fill(mom[i], c.m, n, rng, 0.1);
      if (has_aux && c.mode == Precision::kKahan) fill(aux[i], c.p, n, rng, 1e-3);
      if (has_aux && c.mode == Precision::kMaster) fill(aux[i], DType::kFloat32, n, rng, 1e-3, 0.0, &param[i], c.p);
      if (c.nan_grad && i == 1 && n > 3)
        with_storage(c.p, [&](auto tag) {
          using S = decltype(tag);
          storage<S>::store(reinterpret_cast<S*>(grad[i].data), n / 2, typename storage<S>::opmath(NAN));
        });
      step.push_back(0);
    }
  }
  bool same_as(const Problem& o, const char* what_fmt, const char* name) const {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const Buf* a[] = {&param[i], &grad[i], &mom[i], &aux[i]};
      const Buf* b[] = {&o.param[i], &o.grad[i], &o.mom[i], &o.aux[i]};
      for (int k = 0; k < 4; ++k)
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

static SignStepCall base_call(const Case& c) {
  SignStepCall b{};
  b.algo = c.algo;
  b.precision = c.mode;
  b.maximize = c.maximize;
  b.has_grad_scale = c.grad_scale != 0.0f;
  b.grad_scale = double(c.grad_scale);
  b.lr = c.algo == Algo::kLion ? 1e-3 : 2e-3;
  b.weight_decay = c.algo == Algo::kTiger && c.cls == TigerClass::kV ? 0.0 : 0.1;
  b.beta1 = 0.9, b.beta2 = 0.99, b.beta = 0.965;
  b.grad_accum_steps = c.k;
  b.tiger_class = c.cls;
  b.shrink_ratio = 0.99, b.shrink_center = c.cls == TigerClass::kV ? 1.0 : 0.0;
  b.rms_floor = 0.0;
  b.nonfinite_guard = c.guard;
  b.seed = 1234;
  return b;
}

// What describe_tensors() (step_common.h) makes of a problem: per-tensor calls and tensors.
static void describe(const Case& c, Problem& pr, std::vector<SignStepCall>& calls, std::vector<SignStepTensor>& ts) {
  calls.clear(), ts.clear();
  const SignStepCall base = base_call(c);
  for (size_t i = 0; i < pr.shapes.size(); ++i) {
    SignStepCall k = base;
    k.param_dtype = c.p, k.momentum_dtype = c.m;
    k.precision = (c.p == DType::kFloat16 || c.p == DType::kBFloat16) ? c.mode : Precision::kNone;
    calls.push_back(k);
    SignStepTensor t{};
    t.param = pr.param[i].data, t.grad = pr.grad[i].data, t.exp_avg = pr.mom[i].data;
    t.aux = pr.aux[i].bytes ? pr.aux[i].data : nullptr;
    t.numel = pr.shapes[i].numel, t.row_len = pr.shapes[i].row_len;
    t.param_id = uint32_t(7 + i), t.step = pr.step[i], t.update = true;
    ts.push_back(t);
  }
}

// Tiger stage 1 on the host: the CUDA kernel's contract (tiger_rms.cu) — per-slot sums of squares
// of the working copy when the tensor moves, and the guard flag from the unscaled gradients — with
// plain sequential sums (the GPU adds with CUB trees; any order gives the same fp64 sums here up
// to rounding, and the comparison below uses the same eta on both sides).
static void host_stage1(const MtaArgs& a, const SignStepCall& call, const KernelScalars& d, int64_t block, DType p,
                        bool master) {
  if (step_skipped(d)) return;
  const BlockLoc loc = locate_block(a, block);
  const MtaTensor& t = a.t[loc.tensor];
  const bool want_sum = call.tiger_class != TigerClass::kV && tiger_moves(*t.step, call.grad_accum_steps);
  const Span s = span_of(t.numel, t.row_len, loc.chunk);
  with_storage(p, [&](auto tag) {
    using P = decltype(tag);
    using G = typename storage<P>::opmath;
    const GradIn<G> unscale(d.grad_scale);
    bool bad = false;
    for (int32_t r = 0; r < s.nrows; ++r) {
      double sum = 0.0;
      for (int64_t i = s.start + int64_t(r) * s.rlen; i < s.start + int64_t(r + 1) * s.rlen; ++i) {
        const double x = master ? double(static_cast<const float*>(t.ptr[3])[i])
                                : double(storage<P>::load(static_cast<const P*>(t.ptr[0]), i));
        sum += x * x;
        const G g = storage<P>::load(static_cast<const P*>(t.ptr[1]), i);
        bad |= !is_finite_bits(unscale.scaled() ? unscale.unscale(g) : g);
      }
      if (want_sum) d.slot_sums[t.slot0 + s.slot + r] = sum;
    }
    if (call.nonfinite_guard && bad) d.flags[t.ordinal] = 1;
  });
}

struct Coverage {
  long long aligned_chunks = 0, scalar_chunks = 0, launches = 0, multi_launch_calls = 0;
};

// One step of the CUDA launch layer, emulated: the plan of optim_step.cu's run(), then every block
// and thread of every launch.
static void emulated_step(const Case& c, Problem& pr, Coverage& cov, std::vector<double>& eta_out,
                          std::vector<int32_t>& flags_out) {
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> ts;
  describe(c, pr, calls, ts);
  const SignStepCall call = base_call(c);
  const int32_t n = int32_t(ts.size());
  const float found_inf = c.found_inf ? 1.0f : 0.0f, grad_scale = c.grad_scale;
  KernelScalars d = kernel_scalars(call);
  d.found_inf = &found_inf;
  d.grad_scale = c.grad_scale != 0.0f ? &grad_scale : nullptr;
  const WorkspaceLayout ws = workspace_layout(ts);
  std::vector<double> sums(size_t(ws.slots) + 1, std::nan("")), eta(size_t(ws.rows) + 1, std::nan(""));
  std::vector<int32_t> flags(size_t(n) + 1, 0);  // cudaMemsetAsync
  d.slot_sums = sums.data(), d.eta_rows = eta.data(), d.flags = flags.data();
  std::vector<MtaTensor> mt;
  std::vector<int64_t*> steps;
  for (int32_t i = 0; i < n; ++i) {
    steps.push_back(&pr.step[size_t(i)]);
    mt.push_back(mta_tensor(ts[size_t(i)], steps.back(), ws.slot0[size_t(i)], ws.row0[size_t(i)], i));
  }
  auto packed = [&](const std::vector<int32_t>& order, auto blocks_of) {
    std::vector<MtaArgs> out;
    for (const Launch& l : plan_launches(order, [&](int32_t i) { return blocks_of(ts[size_t(i)]); }))
      out.push_back(pack_args(l, mt));
    cov.launches += int64_t(out.size());
    cov.multi_launch_calls += out.size() > 1;
    return out;
  };
  auto blocks = [](const MtaArgs& a) { return int64_t(a.block_start[a.n]); };
  const auto groups = group_by<KernelKey>(n, [&](int32_t i) { return kernel_key(calls[size_t(i)]); });
  const bool tiger = call.algo == Algo::kTiger;
  const bool needs_eta = tiger && call.tiger_class != TigerClass::kV;
  if (needs_eta || (tiger && call.nonfinite_guard)) {
    for (const auto& [key, order] : groups)
      for (const MtaArgs& a : packed(order, update_blocks))
        for (int64_t b = 0; b < blocks(a); ++b) host_stage1(a, call, d, b, key.param, key.mode == Precision::kMaster);
    if (needs_eta) {
      std::vector<int32_t> all;
      for (int32_t i = 0; i < n; ++i) all.push_back(i);
      for (const MtaArgs& a : packed(all, eta_blocks))
        for (int64_t b = 0; b < blocks(a); ++b)
          for (int tid = 0; tid < kBlockSize; ++tid) tiger_eta_block(a, call, d, b, tid, kBlockSize);
    }
  }
  for (const auto& [key, order] : groups)
    dispatch_key(key, [&](auto pt, auto mt_, auto md) {
      using P = decltype(pt);
      using M = decltype(mt_);
      constexpr Precision kMode = decltype(md)::value;
      for (const MtaArgs& a : packed(order, update_blocks))
        for (int64_t b = 0; b < blocks(a); ++b) {
          (Block<P, M, kMode>(a, call, b).aligned ? cov.aligned_chunks : cov.scalar_chunks) += 1;
          for (int tid = 0; tid < kBlockSize; ++tid) {
            if (tiger) tiger_block<P, M, kMode>(a, call, d, b, tid, kBlockSize);
            else lion_block<P, M, kMode>(a, call, d, b, tid, kBlockSize);
          }
        }
    });
  for (const StepArgs& a : pack_steps(steps))
    for (int64_t i = 0; i < a.n; ++i) advance_step(a, d.found_inf, i);
  eta_out = eta;
  flags_out = flags;
}

// The same step with the CPU kernels, given the step sizes the emulated stage 2 produced (checked
// against a direct computation separately), and the guard flags from the CPU's own check.
static bool reference_step(const Case& c, Problem& pr, const std::vector<double>& eta, const std::vector<int32_t>& flags) {
  if (c.found_inf) return true;  // nothing moves, not even the step
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> ts;
  describe(c, pr, calls, ts);
  const WorkspaceLayout ws = workspace_layout(ts);
  bool flags_ok = true;
  for (size_t i = 0; i < ts.size(); ++i) {
    SignStepTensor& t = ts[i];
    const SignStepCall& k = calls[i];
    if (t.numel == 0) {
      ++pr.step[i];
      continue;
    }
    if (c.algo == Algo::kLion) {
      t.eta = k.lr;
    } else {
      t.update = tiger_is_update_step(t.step, k.grad_accum_steps);
      t.shrink = k.nonfinite_guard &&
                 !cpu::cpu_ref::all_finite(k.param_dtype, t.grad, 0, t.numel, k.has_grad_scale, k.grad_scale);
      flags_ok &= !k.nonfinite_guard || t.shrink == (flags[i] != 0);
      if (k.tiger_class == TigerClass::kV) t.eta = 0.5 * k.lr;
      else if (k.tiger_class == TigerClass::kK) t.eta = eta[size_t(ws.row0[i])];
      else t.eta_rows = &eta[size_t(ws.row0[i])];
    }
    cpu::cpu_ref::sign_step(k, t, 0, t.numel, nullptr);
    ++pr.step[i];
  }
  return flags_ok;
}

// Stage 2's step sizes against sums computed directly over each row (sequential, fp64).
static bool etas_match(const Case& c, Problem& before, const std::vector<double>& eta) {
  if (c.algo != Algo::kTiger || c.cls == TigerClass::kV || c.found_inf) return true;
  std::vector<SignStepCall> calls;
  std::vector<SignStepTensor> ts;
  describe(c, before, calls, ts);
  const WorkspaceLayout ws = workspace_layout(ts);
  for (size_t i = 0; i < ts.size(); ++i) {
    const SignStepTensor& t = ts[i];
    if (!tiger_is_update_step(t.step, c.k)) continue;
    const Grid g = grid_of(t.numel, t.row_len);
    const bool master = calls[i].precision == Precision::kMaster;
    for (int64_t r = 0; r < g.rows; ++r) {
      double s = 0.0;
      for (int64_t j = r * t.row_len; j < (r + 1) * t.row_len; ++j)
        with_storage(master ? DType::kFloat32 : c.p, [&](auto tag) {
          using S = decltype(tag);
          const double x = double(storage<S>::load(static_cast<const S*>(master ? t.aux : t.param), j));
          s += x * x;
        });
      const double want = tiger_eta_from_sumsq(calls[i].lr, s, t.row_len, calls[i].rms_floor);
      const double got = eta[size_t(ws.row0[i] + r)];
      const bool skipped = c.guard && std::isnan(got);  // the guard fired: no eta needed
      if (!skipped && !(std::fabs(got - want) <= 1e-12 * std::fabs(want))) return false;
    }
  }
  return true;
}

static std::vector<Shape> shapes_for(const Case& c) {
  const size_t mis = 1;  // one element past a 16-byte boundary
  std::vector<Shape> s;
  if (c.algo == Algo::kTiger && c.cls == TigerClass::kE) {
    s = {{768 * 90, 768, 0}, {7 * 100, 7, 0}, {2 * 70001, 70001, 0}, {64 * 33, 64, mis}, {16, 16, 0}, {0, 0, 0}};
  } else {
    s = {{1, 1, 0}, {7, 7, 0}, {4097, 4097, 0}, {2 * kChunk + 3, 2 * kChunk + 3, 0}, {1001, 1001, mis}, {0, 0, 0}};
    for (int i = 0; i < 45; ++i) s.push_back({3 + i % 9, 3 + i % 9, i % 4 == 0 ? mis : 0});  // > kMaxTensors
  }
  return s;
}

static void test_blocks_against_cpu() {
  std::printf("CUDA block code run on the CPU vs the CPU kernels (bitwise)\n");
  const DType dtypes[] = {DType::kFloat32, DType::kFloat64, DType::kFloat16, DType::kBFloat16};
  const Precision modes[] = {Precision::kNone, Precision::kKahan, Precision::kStochastic, Precision::kMaster};
  struct Algo_ {
    const char* name;
    Algo algo;
    TigerClass cls;
  } algos[] = {{"lion", Algo::kLion, TigerClass::kK}, {"tigerK", Algo::kTiger, TigerClass::kK},
               {"tigerE", Algo::kTiger, TigerClass::kE}, {"tigerV", Algo::kTiger, TigerClass::kV}};
  Bulk same("updated param/grad/momentum/aux/step identical to the CPU kernels");
  Bulk flags("guard flags identical to the CPU's check");
  Bulk etas("stage-2 step sizes equal direct per-row RMS");
  Coverage cov;
  int combos = 0;
  for (const Algo_& al : algos)
    for (DType p : dtypes)
      for (DType m : dtypes) {
        if ((m == DType::kFloat64) != (p == DType::kFloat64)) continue;
        for (Precision mode : modes) {
          const bool half = p == DType::kFloat16 || p == DType::kBFloat16;
          if (!half && mode != Precision::kNone) continue;
          ++combos;
          // variants: plain; GradScaler (power of two) + maximize; GradScaler (1000) + guard + NaN +
          // accumulation (k = 2: a momentum-only step, then an update); found_inf (nothing moves).
          const Case variants[] = {
              {al.name, al.algo, al.cls, p, m, mode, 1, 0.0f, false, false, false, false, 2},
              {al.name, al.algo, al.cls, p, m, mode, 1, 1024.0f, false, true, true, false, 2},
              {al.name, al.algo, al.cls, p, m, mode, 2, 1000.0f, false, false, true, true, 2},
              {al.name, al.algo, al.cls, p, m, mode, 1, 65536.0f, true, false, true, true, 1},
          };
          for (const Case& c : variants) {
            if (c.nan_grad && c.algo == Algo::kLion) continue;  // Lion propagates NaN; covered by grad NaN in tiger
            const auto shapes = shapes_for(c);
            const uint64_t seed = 1000 + uint64_t(combos) * 16 + uint64_t(&c - variants);
            Problem emu(c, shapes, seed), ref(c, shapes, seed), before(c, shapes, seed);
            bool ok = true, fok = true, eok = true;
            for (int s = 0; s < c.steps; ++s) {
              std::vector<double> eta;
              std::vector<int32_t> fl;
              emulated_step(c, emu, cov, eta, fl);
              eok &= etas_match(c, before, eta);
              fok &= reference_step(c, ref, eta, fl);
              ok &= emu.same_as(ref, "    %s: tensor %zu array %d differs at byte %zu\n", c.name);
              // keep `before` in step with the reference for the next step's direct RMS
              std::vector<int32_t> unused;
              reference_step(c, before, eta, fl);
            }
            auto note = [&](Bulk& b, bool good) {
              if (good) b.ok();
              else if (b.report())
                std::printf("    %s %s/%s mode %d k %lld scale %g found_inf %d guard %d\n", c.name, dtype_name(c.p),
                            dtype_name(c.m), int(c.mode), (long long)c.k, double(c.grad_scale), c.found_inf, c.guard);
            };
            note(same, ok);
            note(flags, fok);
            note(etas, eok);
          }
        }
      }
  same.finish(__LINE__);
  flags.finish(__LINE__);
  etas.finish(__LINE__);
  std::printf("  %d (algo, dtype, momentum, mode) combinations; %lld vector-path chunks, %lld scalar-path chunks, "
              "%lld launches (%lld calls needed several)\n",
              combos, cov.aligned_chunks, cov.scalar_chunks, cov.launches, cov.multi_launch_calls);
  CHECK(combos == 4 * 28 && cov.aligned_chunks > 0 && cov.scalar_chunks > 0 && cov.multi_launch_calls > 0);
}

int main() {
  test_geometry();
  test_plan();
  test_kernel_key();
  test_arithmetic();
  test_blocks_against_cpu();
  std::printf("test_mta: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
