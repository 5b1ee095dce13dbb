// Fused selective scan (Mamba-1 recurrence) forward and backward for scripts/train_tiny.py, loaded via ctypes.
// One pass over time per batch row with the d x n state in cache, instead of torch ops over [T,b,d,n] tensors.

// Built by train_tiny.py with `cc -O3 -march=native -ffast-math -fopenmp -shared -fPIC`: -ffast-math lets
// gcc call glibc's vector expf (the exp of dt*A is most of the work); the batch loop is split over threads.
// Layouts (all contiguous, row-major): x, delta, y, gx, gdelta [b][T][d]; A, gA [d][n]; B, C, gB, gC
// [b][T][n]; hs [b][T][d][n] (state after each step, kept by the forward for the backward); gA_part
// [b][d][n] (per-row partial sums, added up by the caller so threads never write the same memory); nt is
// the thread count (train_tiny's governor drops it to 1 when the machine is busy).
//
// Recurrence, per row and channel: h_t = exp(delta_t A) * h_{t-1} + delta_t x_t B_t, y_t = <h_t, C_t>.
// Backward runs the adjoint G_t = gy_t C_t + exp(delta_{t+1} A) * G_{t+1} in reverse time.
#include <math.h>
#include <stddef.h>

#define SCAN_FORWARD(NAME, REAL, EXP)                                                                          \
  void NAME(int nt, int b, int T, int d, int n, const REAL *x, const REAL *delta, const REAL *A,               \
            const REAL *B, const REAL *C, REAL *y, REAL *hs) {                                                 \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")                                               \
    for (int r = 0; r < b; r++) {                                                                              \
      for (int t = 0; t < T; t++) {                                                                            \
        size_t bt = (size_t)r * T + t;                                                                         \
        const REAL *xt = x + bt * d, *dt = delta + bt * d, *Bt = B + bt * n, *Ct = C + bt * n;                 \
        REAL *h = hs + bt * d * n, *yt = y + bt * d;                                                           \
        const REAL *hp = t > 0 ? h - (size_t)d * n : NULL;                                                     \
        for (int i = 0; i < d; i++) {                                                                          \
          REAL dl = dt[i], dx = dl * xt[i], acc = 0;                                                           \
          const REAL *Ai = A + (size_t)i * n;                                                                  \
          REAL *hi = h + (size_t)i * n;                                                                        \
          if (hp) {                                                                                            \
            const REAL *hpi = hp + (size_t)i * n;                                                              \
            for (int k = 0; k < n; k++) {                                                                      \
              hi[k] = EXP(dl * Ai[k]) * hpi[k] + dx * Bt[k];                                                   \
              acc += hi[k] * Ct[k];                                                                            \
            }                                                                                                  \
          } else {                                                                                             \
            for (int k = 0; k < n; k++) {                                                                      \
              hi[k] = dx * Bt[k];                                                                              \
              acc += hi[k] * Ct[k];                                                                            \
            }                                                                                                  \
          }                                                                                                    \
          yt[i] = acc;                                                                                         \
        }                                                                                                      \
      }                                                                                                        \
    }                                                                                                          \
  }

// carry [b][d][n] is caller-provided scratch (zeroed here): exp(delta_{t+1} A) * G_{t+1} for the next step.
#define SCAN_BACKWARD(NAME, REAL, EXP)                                                                         \
  void NAME(int nt, int b, int T, int d, int n, const REAL *x, const REAL *delta, const REAL *A,               \
            const REAL *B, const REAL *C, const REAL *hs, const REAL *gy, REAL *gx, REAL *gdelta,              \
            REAL *gA_part, REAL *gB, REAL *gC, REAL *carry) {                                                  \
    _Pragma("omp parallel for schedule(static) num_threads(nt)")                                               \
    for (int r = 0; r < b; r++) {                                                                              \
      REAL *cr = carry + (size_t)r * d * n, *gAr = gA_part + (size_t)r * d * n;                                \
      for (size_t j = 0; j < (size_t)d * n; j++) cr[j] = 0, gAr[j] = 0;                                        \
      for (int t = T - 1; t >= 0; t--) {                                                                       \
        size_t bt = (size_t)r * T + t;                                                                         \
        const REAL *xt = x + bt * d, *dt = delta + bt * d, *Bt = B + bt * n, *Ct = C + bt * n;                 \
        const REAL *gyt = gy + bt * d, *h = hs + bt * d * n;                                                   \
        const REAL *hp = t > 0 ? h - (size_t)d * n : NULL;                                                     \
        REAL *gBt = gB + bt * n, *gCt = gC + bt * n;                                                           \
        for (int k = 0; k < n; k++) gBt[k] = 0, gCt[k] = 0;                                                    \
        for (int i = 0; i < d; i++) {                                                                          \
          REAL dl = dt[i], xi = xt[i], g = gyt[i], dx = dl * xi, gdx = 0, gdl = 0;                             \
          const REAL *Ai = A + (size_t)i * n, *hi = h + (size_t)i * n;                                         \
          REAL *ci = cr + (size_t)i * n, *gAi = gAr + (size_t)i * n;                                           \
          if (hp) {                                                                                            \
            const REAL *hpi = hp + (size_t)i * n;                                                              \
            for (int k = 0; k < n; k++) {                                                                      \
              REAL G = g * Ct[k] + ci[k], a = EXP(dl * Ai[k]), s = G * hpi[k] * a;                             \
              gCt[k] += hi[k] * g;                                                                             \
              gdl += s * Ai[k];                                                                                \
              gAi[k] += s * dl;                                                                                \
              gdx += G * Bt[k];                                                                                \
              gBt[k] += G * dx;                                                                                \
              ci[k] = a * G;                                                                                   \
            }                                                                                                  \
          } else {                                                                                             \
            for (int k = 0; k < n; k++) {                                                                      \
              REAL G = g * Ct[k] + ci[k];                                                                      \
              gCt[k] += hi[k] * g;                                                                             \
              gdx += G * Bt[k];                                                                                \
              gBt[k] += G * dx;                                                                                \
            }                                                                                                  \
          }                                                                                                    \
          gdelta[bt * d + i] = gdl + gdx * xi;                                                                 \
          gx[bt * d + i] = gdx * dl;                                                                           \
        }                                                                                                      \
      }                                                                                                        \
    }                                                                                                          \
  }

SCAN_FORWARD(scan_fwd_f32, float, expf)
SCAN_FORWARD(scan_fwd_f64, double, exp)
SCAN_BACKWARD(scan_bwd_f32, float, expf)
SCAN_BACKWARD(scan_bwd_f64, double, exp)
