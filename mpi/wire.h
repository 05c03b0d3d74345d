/* Private to libinparallel-mpi: what the root and its worker ranks say to each other, on a
 * communicator of their own (ip_mpi_pool duplicates the caller's).
 *
 * Every frame is one message that starts with a struct below, then its bytes; a frame whose
 * bytes do not fit one message (more than IPM_CHUNK) sends the rest in TAG_MORE messages of
 * up to IPM_CHUNK bytes each, right after it, to the same rank: MPI keeps messages between
 * two ranks in order, and TAG_MORE is received from that rank alone. Counts stay below
 * INT_MAX, since MPI before version 4 has no larger ones. The ranks run the same program on
 * the same kind of machine, so the structs travel as they are (MPI_BYTE). */
#ifndef IPM_WIRE_H
#define IPM_WIRE_H

#include <stdint.h>
#include <sys/resource.h>

enum {
  IPM_TAG_CALL = 1,   /* root -> worker: struct ipm_call, the encoded argument */
  IPM_TAG_CANCEL,     /* root -> worker: struct ipm_cancel */
  IPM_TAG_STOP,       /* root -> worker: nothing; the worker answers IPM_TAG_BYE */
  IPM_TAG_RESULT,     /* worker -> root: struct ipm_result, kind, message, backtrace, result */
  IPM_TAG_BYE,        /* worker -> root: nothing more will come */
  IPM_TAG_MORE        /* the rest of the frame before it */
};

#define IPM_CHUNK ((size_t)1 << 30)
/* Results up to this size travel in the RESULT message itself (one copy on the worker, one
 * message); larger ones follow it in TAG_MORE messages sent from where they are. */
#define IPM_INLINE ((size_t)64 << 10)

struct ipm_call {
  uint64_t id;
  uint32_t task; /* index in the root's registry (see registry.c) */
  uint32_t reserved;
  uint64_t len;  /* the argument's bytes, which follow */
};

struct ipm_cancel {
  uint64_t id;
};

struct ipm_result {
  uint64_t id;
  int32_t code; /* 0, or the ip_error fields below */
  int32_t raised_code, exit_status, signal, core_dumped, pid;
  struct rusage rusage;
  uint32_t kind_len, msg_len, bt_len; /* strings that follow, no NUL */
  uint32_t inline_len;                /* result bytes in this message, after the strings */
  uint64_t len;                       /* the result's bytes in all */
};

#endif
