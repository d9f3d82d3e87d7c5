// The DiT kernels' CUDA source (src/runtime/dit-kernels.ts, written next to this file as kernels.cu by the test)
// run on simt.h against the formulas they implement, written plainly here, at small shapes and at the DiT's own
// widths, with the launch shapes the TypeScript host code uses. Prints "ok" and exits 0 when every element agrees
// to within a bfloat16 rounding.
#include "simt.h"
#include "kernels.cu"
#include <algorithm>
#include <cstdio>
#include <random>

static float rb(float f) { return bf2f(f2bf(f)); }
static float F(bf16 h) { return bf2f(h); }
static std::mt19937 rng(1);
static std::vector<bf16> randn(size_t n, float scale = 1) {
  std::normal_distribution<float> d(0, scale);
  std::vector<bf16> v(n);
  for (auto& x : v) x = f2bf(d(rng));
  return v;
}
static int bad = 0, checked = 0;
static void check(const char* what, float got, float want) {
  checked++;
  if (std::fabs(got - want) > 1e-2f * (1 + std::fabs(want)) && bad++ < 10) std::printf("%s: got %g, want %g\n", what, got, want);
}
static unsigned blocks(long long n, int per) { return (unsigned)((n + per - 1) / per); }

static void biasConcat(int D, int Sa, int Sb) {
  auto a = randn(Sa * D), ab = randn(D), b = randn(Sb * D), bb = randn(D);
  std::vector<bf16> y((Sa + Sb) * D);
  launch(2, 4, [&] { bias_concat(a.data(), ab.data(), b.data(), bb.data(), y.data(), Sa * D / 8, (Sa + Sb) * D / 8, D / 8); });
  for (int r = 0; r < Sa + Sb; r++)
    for (int i = 0; i < D; i++)
      check("BiasConcat", F(y[r * D + i]), r < Sa ? rb(F(a[r * D + i]) + F(ab[i])) : rb(F(b[(r - Sa) * D + i]) + F(bb[i])));
}

static void biasGelu(int N, int rows) {
  auto x = randn(rows * N, 2), b = randn(N);
  std::vector<bf16> y(rows * N);
  launch(2, 3, [&] { bias_gelu(x.data(), b.data(), y.data(), rows * N / 8, N / 8); });
  for (int i = 0; i < rows * N; i++) {
    const float t = rb(F(x[i]) + F(b[i % N]));
    check("BiasGelu", F(y[i]), rb(0.5f * t * (1 + std::tanh(0.7978845608028654f * (t + 0.044715f * t * t * t)))));
  }
}

static void gatedResidualNorm(int D, int rows) {
  auto x = randn(rows * D), h = randn(rows * D), hb = randn(D), gate = randn(D), scale = randn(D, 0.3f), shift = randn(D);
  std::vector<bf16> y(rows * D), sum(rows * D);
  launch(blocks(rows, 8), 256, [&] {
    gated_residual_norm(x.data(), h.data(), hb.data(), gate.data(), scale.data(), shift.data(), y.data(), sum.data(), rows, D, 1e-6f);
  });
  for (int r = 0; r < rows; r++) {
    std::vector<float> s(D);
    double mean = 0, var = 0;
    for (int i = 0; i < D; i++) {
      s[i] = rb(F(x[r * D + i]) + rb(rb(F(h[r * D + i]) + F(hb[i])) * F(gate[i])));
      mean += s[i];
      check("GatedResidualNorm sum", F(sum[r * D + i]), s[i]);
    }
    mean /= D;
    for (int i = 0; i < D; i++) var += (s[i] - mean) * (s[i] - mean);
    const double rstd = 1 / std::sqrt(var / D + 1e-6);
    for (int i = 0; i < D; i++)
      check("GatedResidualNorm y", F(y[r * D + i]), rb(rb(rb((s[i] - mean) * rstd) * rb(1 + F(scale[i]))) + F(shift[i])));
  }
}

// S image tokens (rotated) then St text tokens (normalized only), H heads of hd
static void rmsNormRope(int S, int St, int H, int hd) {
  const int W = H * hd;
  auto x = randn(S * W), xb = randn(W), w = randn(hd), xt = randn(std::max(St, 1) * W), xtb = randn(W), wt = randn(hd);
  std::vector<float> cosT(S * hd / 2), sinT(S * hd / 2);
  for (int i = 0; i < S * hd / 2; i++) { cosT[i] = std::cos(0.3f * i); sinT[i] = std::sin(0.3f * i); }
  std::vector<bf16> y((S + St) * W);
  const long long tokens = S + St;
  launch(blocks(tokens, 8), 256, [&] {
    rms_norm_rope(x.data(), xb.data(), w.data(), cosT.data(), sinT.data(), y.data(), tokens, H, hd, 1e-6f, xt.data(), xtb.data(), wt.data(), S);
  });
  for (long long row = 0; row < tokens * H; row++) {
    const long long token = row / H;
    const bool text = token >= S;
    const bf16* src = text ? &xt[(row - (long long)S * H) * hd] : &x[row * hd];
    const bf16* bias = (text ? xtb.data() : xb.data()) + (row % H) * hd;
    std::vector<float> a(hd), n(hd);
    double ss = 0;
    for (int i = 0; i < hd; i++) { a[i] = rb(F(src[i]) + F(bias[i])); ss += a[i] * a[i]; }
    const float r = 1 / std::sqrt(ss / hd + 1e-6);
    for (int i = 0; i < hd; i++) n[i] = rb(rb(a[i] * r) * F((text ? wt : w)[i]));
    for (int i = 0; i < hd / 2; i++) {
      float o0 = n[2 * i], o1 = n[2 * i + 1];
      if (!text) {
        const float c = cosT[token * hd / 2 + i], s = sinT[token * hd / 2 + i];
        o0 = n[2 * i] * c - n[2 * i + 1] * s;
        o1 = n[2 * i + 1] * c + n[2 * i] * s;
      }
      check("RmsNormRope", F(y[row * hd + 2 * i]), rb(o0));
      check("RmsNormRope", F(y[row * hd + 2 * i + 1]), rb(o1));
    }
  }
}

int main() {
  for (int D : {16, 48}) biasConcat(D, 3, 5);
  for (int N : {8, 24}) biasGelu(N, 7);
  for (int D : {32, 48, 3072}) gatedResidualNorm(D, 11);
  rmsNormRope(3, 2, 2, 16);   // the tiny fixtures' heads
  rmsNormRope(9, 4, 3, 8);    // heads not filling a warp's pass
  rmsNormRope(5, 3, 24, 128); // the DiT's heads
  rmsNormRope(2, 0, 6, 32);   // no text rows
  std::printf("%s: %d of %d elements off\n", bad ? "FAIL" : "ok", bad, checked);
  return bad != 0;
}
