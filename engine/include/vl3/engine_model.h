/* engine_model.h: part of the public engine API (included by vl3/engine.h; include that). */
#ifndef VL3_ENGINE_MODEL_H
#define VL3_ENGINE_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "vl3/err.h"

#ifdef __cplusplus
extern "C" {
#endif

#ifdef __cplusplus
}
#endif

#endif
