/* Entry point of the extension: the InParallel module, the core's error codes and version. */
#include "ruby_inparallel.h"

VALUE rbip_mInParallel;

RUBY_FUNC_EXPORTED void Init_inparallel(void) {
  rbip_mInParallel = rb_define_module("InParallel");

  /* The core's failure codes by name, e.g. CODES["ETIMEDOUT"] (negative integers). */
  VALUE codes = rb_hash_new();
#define RBIP_CODE(name, value, text) rb_hash_aset(codes, rb_str_new_cstr(#name), INT2NUM(value));
  IP_ERRNO_MAP(RBIP_CODE)
#undef RBIP_CODE
  rb_obj_freeze(codes);
  rb_define_const(rbip_mInParallel, "CODES", codes);
  rb_define_const(rbip_mInParallel, "CORE_VERSION", rb_obj_freeze(rb_str_new_cstr(ip_version())));

  rbip_init_task();
  rbip_init_future();
  rbip_init_waitfor();
  rbip_init_pool();
  rbip_init_mpi();
}
