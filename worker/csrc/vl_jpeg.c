/* vl_jpeg.c: JPEG decoding with the system libjpeg(-turbo), set up as Pillow's JpegDecode.c does it
 * (libjpeg defaults: ISLOW IDCT, fancy upsampling, block smoothing; out_color_space RGB for 3-component
 * images, GRAYSCALE for 1, CMYK for 4, letting libjpeg convert YCbCr and YCCK). Errors longjmp back here
 * and are returned as text; warnings are ignored, as in Pillow. */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

enum { VL_OK = 0, VL_ERROR = 1, VL_TOO_MANY_PIXELS = 2, VL_ZERO_SIZE = 3, VL_UNSUPPORTED = 4, VL_NO_MEMORY = 5 };

typedef struct {
    unsigned int width;
    unsigned int height;
    int components;      /* samples per output pixel: 1 (gray), 3 (RGB) or 4 (CMYK) */
    unsigned char *pixels;
    unsigned char *exif; /* the first APP1 "Exif\0\0" payload after those 6 bytes, or NULL */
    size_t exif_len;
    char message[JMSG_LENGTH_MAX];
} vl_jpeg_image;

struct vl_error_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
};

static void vl_error_exit(j_common_ptr cinfo) {
    struct vl_error_mgr *err = (struct vl_error_mgr *)cinfo->err;
    longjmp(err->jump, 1);
}

static void vl_output_message(j_common_ptr cinfo) { (void)cinfo; }

void vl_jpeg_free(vl_jpeg_image *image) {
    free(image->pixels);
    free(image->exif);
    image->pixels = NULL;
    image->exif = NULL;
}

int vl_jpeg_decode(const unsigned char *data, size_t len, unsigned long long max_pixels, vl_jpeg_image *image) {
    struct jpeg_decompress_struct cinfo;
    struct vl_error_mgr err;
    /* volatile: modified between setjmp and longjmp */
    volatile int status = VL_OK;

    memset(image, 0, sizeof(*image));
    cinfo.err = jpeg_std_error(&err.pub);
    err.pub.error_exit = vl_error_exit;
    err.pub.output_message = vl_output_message;
    if (setjmp(err.jump)) {
        err.pub.format_message((j_common_ptr)&cinfo, image->message);
        jpeg_destroy_decompress(&cinfo);
        vl_jpeg_free(image);
        return VL_ERROR;
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);

    image->width = cinfo.image_width;
    image->height = cinfo.image_height;
    for (jpeg_saved_marker_ptr m = cinfo.marker_list; m != NULL; m = m->next) {
        if (m->marker == JPEG_APP0 + 1 && m->data_length > 6 && memcmp(m->data, "Exif\0\0", 6) == 0) {
            image->exif_len = m->data_length - 6;
            image->exif = malloc(image->exif_len);
            if (image->exif == NULL) {
                status = VL_NO_MEMORY;
                goto done;
            }
            memcpy(image->exif, m->data + 6, image->exif_len);
            break;
        }
    }
    if (cinfo.image_width == 0 || cinfo.image_height == 0) {
        status = VL_ZERO_SIZE;
        goto done;
    }
    if ((unsigned long long)cinfo.image_width * cinfo.image_height > max_pixels) {
        status = VL_TOO_MANY_PIXELS;
        goto done;
    }
    switch (cinfo.num_components) {
    case 1: cinfo.out_color_space = JCS_GRAYSCALE; break;
    case 3: cinfo.out_color_space = JCS_RGB; break;
    case 4: cinfo.out_color_space = JCS_CMYK; break;
    default:
        snprintf(image->message, sizeof(image->message), "cannot handle %d-layer images", cinfo.num_components);
        status = VL_UNSUPPORTED;
        goto done;
    }
    jpeg_start_decompress(&cinfo);
    image->components = cinfo.output_components;
    {
        size_t stride = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
        image->pixels = malloc(stride * cinfo.output_height);
        if (image->pixels == NULL) {
            status = VL_NO_MEMORY;
            goto done;
        }
        while (cinfo.output_scanline < cinfo.output_height) {
            JSAMPROW row = image->pixels + stride * cinfo.output_scanline;
            jpeg_read_scanlines(&cinfo, &row, 1);
        }
    }
    jpeg_finish_decompress(&cinfo);
done:
    jpeg_destroy_decompress(&cinfo);
    if (status != VL_OK && status != VL_TOO_MANY_PIXELS && status != VL_ZERO_SIZE) {
        free(image->pixels);
        image->pixels = NULL;
    }
    if (status == VL_NO_MEMORY) {
        snprintf(image->message, sizeof(image->message), "out of memory");
    }
    return status;
}
