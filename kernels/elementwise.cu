// Element-wise kernels: sum and difference of two vectors, the `simple`
// model's computation, for INT32 and FP32.
//
// Every kernel is a 1-D grid-stride loop over `n` elements, so any grid
// covers any length; the host sizes the grid (256 threads a block, a capped
// number of blocks). Lengths and indices are 64-bit: a tensor may hold more
// than 2^31 elements.
//
// INT32 wraps on overflow, as the CPU `add_sub` backend does: the sum is
// taken in unsigned arithmetic, where wrapping is defined, and reinterpreted.
//
// The host refuses outputs that overlap an input or each other, which is what
// the `__restrict__` qualifiers promise the compiler.

extern "C" __global__ void add_sub_i32(const int *__restrict__ in0,
                                       const int *__restrict__ in1,
                                       int *__restrict__ out_sum,
                                       int *__restrict__ out_diff,
                                       unsigned long long n)
{
    unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < n; i += stride) {
        unsigned int a = (unsigned int)in0[i];
        unsigned int b = (unsigned int)in1[i];
        out_sum[i] = (int)(a + b);
        out_diff[i] = (int)(a - b);
    }
}

extern "C" __global__ void add_sub_f32(const float *__restrict__ in0,
                                       const float *__restrict__ in1,
                                       float *__restrict__ out_sum,
                                       float *__restrict__ out_diff,
                                       unsigned long long n)
{
    unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         i < n; i += stride) {
        float a = in0[i];
        float b = in1[i];
        out_sum[i] = a + b;
        out_diff[i] = a - b;
    }
}
