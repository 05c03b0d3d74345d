/* Everything that was here is in tests/helpers.h now. This file stays only for
 * tests/test-signals.c, which still includes it and uses the old names below; once it
 * includes helpers.h and uses the new names, delete this file (and its mention in
 * Makefile.am). */
#ifndef IP_TEST_FAULTS_H
#define IP_TEST_FAULTS_H

#include "helpers.h"

#define fa_gate gate
#define fa_gate_open gate_try_open
#define fa_gate_release gate_try_release
#define fa_gate_close gate_close
#define fa_wait_on_gate wait_on_gate
#define fa_now_ms now_ms
#define fa_left_ms left_ms
#define fa_guard_ms guard_ms

#endif
