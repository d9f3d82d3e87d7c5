// A CPU stand-in for the few CUDA built-ins the DiT kernels use, so that their source compiles with g++ and runs
// here: every thread of a block is an OS thread, __syncthreads and the warp shuffles are barriers of the block,
// blocks run one after the other. Slow and only for small shapes; it checks indexing, reductions and rounding,
// not speed. Shuffles exchange within a warp only and need every thread of the block to take part, as they do in
// these kernels (a warp that leaves early leaves whole, and drops out of the barrier).
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static

struct uint2 { unsigned int x, y; };
struct uint4 { unsigned int x, y, z, w; };
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct dim3 { unsigned int x = 0, y = 0, z = 0; };

thread_local dim3 blockIdx, threadIdx;
dim3 blockDim, gridDim;
static std::barrier<>* block_barrier;
static float shuffle_slots[1024];

inline uint2 make_uint2(unsigned a, unsigned b) { return {a, b}; }
inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return {a, b, c, d}; }
inline float __uint_as_float(unsigned int u) { float f; std::memcpy(&f, &u, 4); return f; }
inline unsigned int __float_as_uint(float f) { unsigned int u; std::memcpy(&u, &f, 4); return u; }
inline int __ffs(int v) { return ffs(v); }
inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
inline float __expf(float v) { return std::exp(v); }
inline float __fdividef(float a, float b) { return a / b; }
inline void __syncthreads() { block_barrier->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  shuffle_slots[threadIdx.x] = v;
  block_barrier->arrive_and_wait();
  const float other = shuffle_slots[threadIdx.x ^ lane_mask];
  block_barrier->arrive_and_wait();
  return other;
}

template <class Kernel> void launch(unsigned grid, unsigned block, Kernel kernel) {
  blockDim.x = block;
  gridDim.x = grid;
  for (unsigned b = 0; b < grid; b++) {
    std::barrier<> barrier(block);
    block_barrier = &barrier;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; t++)
      threads.emplace_back([=] { blockIdx.x = b; threadIdx.x = t; kernel(); block_barrier->arrive_and_drop(); });
    for (auto& thread : threads) thread.join();
  }
}
