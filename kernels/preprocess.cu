// Image pre-processing in one pass: bilinear resize of a UINT8 HWC image,
// normalization ((x * scale - mean[c]) / std[c]) and HWC -> CHW, written as
// FP32 or FP16.
//
// Resize follows the align_corners=false convention with half-pixel centres,
// as PyTorch's bilinear interpolation does: an output pixel's centre maps to
// source coordinate (o + 0.5) * in/out - 0.5, clamped at 0; the right and
// bottom neighbours are clamped to the last row/column.
//
// One thread computes one output pixel for every channel (1 or 3), in a 1-D
// grid-stride loop over out_h * out_w pixels. The host passes the scale
// factors and 1/std precomputed, and compiles with --fmad=false, so the
// arithmetic here is the same sequence of IEEE single-precision operations as
// the CPU reference (`gpu::kernels::reference::preprocess`).

struct PixelF32 {
    static __device__ __forceinline__ void store(float *dst, unsigned long long i, float v)
    {
        dst[i] = v;
    }
};

struct PixelF16 {
    // Round to nearest even, as half::f16::from_f32 does on the host; inline
    // PTX keeps the source free of headers.
    static __device__ __forceinline__ void store(unsigned short *dst, unsigned long long i, float v)
    {
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(v));
        dst[i] = h;
    }
};

template <typename Store, typename Out>
__device__ __forceinline__ void preprocess(const unsigned char *__restrict__ src,
                                           unsigned int in_h,
                                           unsigned int in_w,
                                           unsigned int channels,
                                           Out *__restrict__ dst,
                                           unsigned int out_h,
                                           unsigned int out_w,
                                           float scale_y,
                                           float scale_x,
                                           float scale,
                                           float mean0, float mean1, float mean2,
                                           float inv_std0, float inv_std1, float inv_std2)
{
    const unsigned long long plane = (unsigned long long)out_h * out_w;
    const unsigned long long stride = (unsigned long long)blockDim.x * gridDim.x;
    for (unsigned long long p = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x;
         p < plane; p += stride) {
        const unsigned int oy = (unsigned int)(p / out_w);
        const unsigned int ox = (unsigned int)(p % out_w);

        float sy = ((float)oy + 0.5f) * scale_y - 0.5f;
        if (sy < 0.0f) sy = 0.0f;
        unsigned int y0 = (unsigned int)sy;
        if (y0 > in_h - 1) y0 = in_h - 1;
        const unsigned int y1 = y0 < in_h - 1 ? y0 + 1 : y0;
        const float ly1 = sy - (float)y0;
        const float ly0 = 1.0f - ly1;

        float sx = ((float)ox + 0.5f) * scale_x - 0.5f;
        if (sx < 0.0f) sx = 0.0f;
        unsigned int x0 = (unsigned int)sx;
        if (x0 > in_w - 1) x0 = in_w - 1;
        const unsigned int x1 = x0 < in_w - 1 ? x0 + 1 : x0;
        const float lx1 = sx - (float)x0;
        const float lx0 = 1.0f - lx1;

        const unsigned long long row0 = (unsigned long long)y0 * in_w;
        const unsigned long long row1 = (unsigned long long)y1 * in_w;
        const unsigned long long i00 = (row0 + x0) * channels;
        const unsigned long long i01 = (row0 + x1) * channels;
        const unsigned long long i10 = (row1 + x0) * channels;
        const unsigned long long i11 = (row1 + x1) * channels;
        for (unsigned int c = 0; c < channels; ++c) {
            const float top = lx0 * (float)src[i00 + c] + lx1 * (float)src[i01 + c];
            const float bottom = lx0 * (float)src[i10 + c] + lx1 * (float)src[i11 + c];
            const float v = ly0 * top + ly1 * bottom;
            // Selects, not an indexed array, keep mean and 1/std in registers.
            const float mean = c == 0 ? mean0 : (c == 1 ? mean1 : mean2);
            const float inv_std = c == 0 ? inv_std0 : (c == 1 ? inv_std1 : inv_std2);
            Store::store(dst, c * plane + p, (v * scale - mean) * inv_std);
        }
    }
}

#define PREPROCESS_ENTRY(NAME, STORE, OUT)                                              \
    extern "C" __global__ void NAME(const unsigned char *__restrict__ src,            \
                                    unsigned int in_h, unsigned int in_w,             \
                                    unsigned int channels, OUT *__restrict__ dst,     \
                                    unsigned int out_h, unsigned int out_w,           \
                                    float scale_y, float scale_x, float scale,        \
                                    float mean0, float mean1, float mean2,            \
                                    float inv_std0, float inv_std1, float inv_std2)   \
    {                                                                                 \
        preprocess<STORE, OUT>(src, in_h, in_w, channels, dst, out_h, out_w,          \
                               scale_y, scale_x, scale, mean0, mean1, mean2,          \
                               inv_std0, inv_std1, inv_std2);                         \
    }

PREPROCESS_ENTRY(preprocess_f32, PixelF32, float)
PREPROCESS_ENTRY(preprocess_f16, PixelF16, unsigned short)
