/* Test stand-in for CMSIS-NN's arm_nnfunctions.h: the types and signatures the harness uses,
 * with plain reference loops, so the generated harness can be compiled and run on the host. */
#include <stdint.h>
#include <string.h>

typedef enum { ARM_CMSIS_NN_SUCCESS = 0 } arm_cmsis_nn_status;
typedef struct { void *buf; int32_t size; } cmsis_nn_context;
typedef struct { int32_t n, h, w, c; } cmsis_nn_dims;
typedef struct { int32_t w, h; } cmsis_nn_tile;
typedef struct { int32_t min, max; } cmsis_nn_activation;
typedef struct {
    int32_t input_offset, output_offset;
    cmsis_nn_tile stride, padding, dilation;
    cmsis_nn_activation activation;
} cmsis_nn_conv_params;
typedef struct { cmsis_nn_tile stride, padding; cmsis_nn_activation activation; } cmsis_nn_pool_params;
typedef struct { int32_t input_offset, filter_offset, output_offset; cmsis_nn_activation activation; } cmsis_nn_fc_params;
typedef struct { int32_t *multiplier; int32_t *shift; } cmsis_nn_per_channel_quant_params;
typedef struct { int32_t multiplier; int32_t shift; } cmsis_nn_per_tensor_quant_params;

static inline arm_cmsis_nn_status arm_convolve_wrapper_s8(
    const cmsis_nn_context *ctx, const cmsis_nn_conv_params *p, const cmsis_nn_per_channel_quant_params *q,
    const cmsis_nn_dims *in, const int8_t *x, const cmsis_nn_dims *f, const int8_t *w,
    const cmsis_nn_dims *bd, const int32_t *b, const cmsis_nn_dims *out, int8_t *y) {
    (void)ctx; (void)q; (void)bd;
    for (int oy = 0; oy < out->h; ++oy)
        for (int ox = 0; ox < out->w; ++ox)
            for (int co = 0; co < out->c; ++co) {
                int32_t acc = b[co];
                for (int ky = 0; ky < f->h; ++ky)
                    for (int kx = 0; kx < f->w; ++kx) {
                        int iy = oy * p->stride.h - p->padding.h + ky, ix = ox * p->stride.w - p->padding.w + kx;
                        if (iy < 0 || ix < 0 || iy >= in->h || ix >= in->w) continue;
                        for (int ci = 0; ci < in->c; ++ci)
                            acc += x[(iy * in->w + ix) * in->c + ci] * w[((co * f->h + ky) * f->w + kx) * in->c + ci];
                    }
                y[(oy * out->w + ox) * out->c + co] = (int8_t)(acc >> 8);
            }
    return ARM_CMSIS_NN_SUCCESS;
}

static inline arm_cmsis_nn_status arm_avgpool_s8(
    const cmsis_nn_context *ctx, const cmsis_nn_pool_params *p, const cmsis_nn_dims *in, const int8_t *x,
    const cmsis_nn_dims *f, const cmsis_nn_dims *out, int8_t *y) {
    (void)ctx;
    for (int oy = 0; oy < out->h; ++oy)
        for (int ox = 0; ox < out->w; ++ox)
            for (int c = 0; c < out->c; ++c) {
                int32_t sum = 0, n = 0;
                for (int ky = 0; ky < f->h; ++ky)
                    for (int kx = 0; kx < f->w; ++kx) {
                        int iy = oy * p->stride.h - p->padding.h + ky, ix = ox * p->stride.w - p->padding.w + kx;
                        if (iy < 0 || ix < 0 || iy >= in->h || ix >= in->w) continue;
                        sum += x[(iy * in->w + ix) * in->c + c]; ++n;
                    }
                y[(oy * out->w + ox) * out->c + c] = (int8_t)(n ? sum / n : 0);
            }
    return ARM_CMSIS_NN_SUCCESS;
}

static inline arm_cmsis_nn_status arm_elementwise_add_s8(
    const int8_t *a, const int8_t *b, int32_t ao, int32_t am, int32_t as, int32_t bo, int32_t bm, int32_t bs,
    int32_t ls, int8_t *y, int32_t yo, int32_t ym, int32_t ys, int32_t lo, int32_t hi, int32_t n) {
    (void)ao; (void)am; (void)as; (void)bo; (void)bm; (void)bs; (void)ls; (void)yo; (void)ym; (void)ys;
    for (int32_t i = 0; i < n; ++i) {
        int32_t s = a[i] + b[i];
        y[i] = (int8_t)(s < lo ? lo : s > hi ? hi : s);
    }
    return ARM_CMSIS_NN_SUCCESS;
}

static inline void arm_relu_q7(int8_t *x, uint16_t n) {
    for (uint16_t i = 0; i < n; ++i) if (x[i] < 0) x[i] = 0;
}

static inline arm_cmsis_nn_status arm_fully_connected_s8(
    const cmsis_nn_context *ctx, const cmsis_nn_fc_params *p, const cmsis_nn_per_tensor_quant_params *q,
    const cmsis_nn_dims *in, const int8_t *x, const cmsis_nn_dims *f, const int8_t *w,
    const cmsis_nn_dims *bd, const int32_t *b, const cmsis_nn_dims *out, int8_t *y) {
    (void)ctx; (void)p; (void)q; (void)bd; (void)f;
    for (int o = 0; o < out->c; ++o) {
        int32_t acc = b[o];
        for (int i = 0; i < in->c; ++i) acc += x[i] * w[o * in->c + i];
        y[o] = (int8_t)(acc >> 8);
    }
    return ARM_CMSIS_NN_SUCCESS;
}
