/* Lua values <-> MessagePack, the default way results travel.
 *
 * Child side: the task's results are packed straight from the Lua stack through the core's
 * write callback, so a large string goes from Lua's memory to the socket without an
 * intermediate buffer. Parent side: the core's msgpack plugin decodes the bytes (one object,
 * bounded, fuzzed) and we turn its msgpack_object into Lua values.
 *
 * The envelope is an array holding every result, so `return a, nil, c` comes back as three
 * values. Tables: keys exactly 1..n (n >= 1) make an array; anything else, including the empty
 * table, makes a map (so a table with holes comes back with the same keys). Metatables are
 * ignored. Functions, userdata, threads and cycles fail the call with IP_EENCODE and a message
 * naming the path of the offending value, e.g. `result[2].x`.
 *
 * A value the task raised (error({code = 42})) is packed on its own, without the envelope,
 * into memory (errors.c sends it with the call's error), and unpacked the same way. */
#include "lip.h"
#include <inparallel/msgpack.h>
#include <math.h>
#include <msgpack/unpack_define.h>
#include <stdio.h>
#include <string.h>

/* msgpack-c refuses to unpack objects nested deeper than MSGPACK_EMBED_STACK_SIZE (32)
 * containers; the envelope is one of them. */
#define MAX_DEPTH (MSGPACK_EMBED_STACK_SIZE - 1)

enum { SEG_INDEX, SEG_KEY };
struct seg {
  int kind;
  lua_Integer index; /* SEG_INDEX */
  int key;           /* SEG_KEY: stack slot of the key */
};

typedef struct enc {
  lua_State *L;
  msgpack_packer pk;
  ip_write_fn w;
  void *wctx;
  int depth;
  const void *open[MAX_DEPTH]; /* tables being packed, outermost first: a cycle is a repeat */
  int plen;
  struct seg path[MAX_DEPTH + 2];
  const char *root; /* what the path starts from: "result", "err.value" */
  char why[700];    /* set when a value cannot be packed */
} enc;

static int write_cb(void *data, const char *buf, size_t len) {
  enc *e = data;
  return e->w(e->wctx, buf, len);
}

/* ---- failure paths ---------------------------------------------------------------------- */

static int is_identifier(const char *s, size_t n) {
  static const char *const kw[] = {"and", "break", "do", "else", "elseif", "end", "false",
                                   "for", "function", "goto", "if", "in", "local", "nil", "not",
                                   "or", "repeat", "return", "then", "true", "until", "while"};
  if (n == 0 || n > 40 || !(s[0] == '_' || ((s[0] | 32) >= 'a' && (s[0] | 32) <= 'z'))) return 0;
  for (size_t i = 1; i < n; i++) {
    char c = s[i];
    if (!(c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z'))) return 0;
  }
  for (size_t i = 0; i < sizeof kw / sizeof *kw; i++)
    if (strlen(kw[i]) == n && memcmp(kw[i], s, n) == 0) return 0;
  return 1;
}

static void add(char *buf, size_t cap, size_t *at, const char *s, size_t n) {
  if (*at >= cap - 1) return;
  if (n > cap - 1 - *at) n = cap - 1 - *at;
  memcpy(buf + *at, s, n);
  *at += n;
  buf[*at] = '\0';
}

/* `result[2].x["a b"][3]`: how a Lua programmer would reach the value. */
static void path_text(enc *e, int upto, char *buf, size_t cap) {
  size_t at = 0;
  char tmp[64];
  buf[0] = '\0';
  add(buf, cap, &at, e->root, strlen(e->root));
  for (int i = 0; i < upto; i++) {
    const struct seg *s = &e->path[i];
    if (s->kind == SEG_INDEX) {
      int n = snprintf(tmp, sizeof tmp, "[%lld]", (long long)s->index);
      add(buf, cap, &at, tmp, (size_t)n);
      continue;
    }
    lua_State *L = e->L;
    switch (lua_type(L, s->key)) {
    case LUA_TSTRING: {
      size_t n;
      const char *k = lua_tolstring(L, s->key, &n);
      if (is_identifier(k, n)) {
        add(buf, cap, &at, ".", 1);
        add(buf, cap, &at, k, n);
        break;
      }
      add(buf, cap, &at, "[\"", 2);
      for (size_t j = 0; j < n && j < 40; j++) {
        unsigned char c = (unsigned char)k[j];
        int m = c == '"' || c == '\\' ? snprintf(tmp, sizeof tmp, "\\%c", c)
                : c < 32 || c > 126   ? snprintf(tmp, sizeof tmp, "\\%u", c)
                                      : snprintf(tmp, sizeof tmp, "%c", c);
        add(buf, cap, &at, tmp, (size_t)m);
      }
      if (n > 40) add(buf, cap, &at, "...", 3);
      add(buf, cap, &at, "\"]", 2);
      break;
    }
    case LUA_TNUMBER: {
      int n;
      if (LIP_HAS_INTEGERS && lua_isinteger(L, s->key)) n = snprintf(tmp, sizeof tmp, "[%lld]", (long long)lua_tointeger(L, s->key));
      else n = snprintf(tmp, sizeof tmp, "[%.14g]", (double)lua_tonumber(L, s->key));
      add(buf, cap, &at, tmp, (size_t)n);
      break;
    }
    case LUA_TBOOLEAN:
      add(buf, cap, &at, lua_toboolean(L, s->key) ? "[true]" : "[false]",
          lua_toboolean(L, s->key) ? 6 : 7);
      break;
    default: {
      int n = snprintf(tmp, sizeof tmp, "[<%s key>]", luaL_typename(L, s->key));
      add(buf, cap, &at, tmp, (size_t)n);
    }
    }
  }
}

/* Records why the value cannot be packed ("cannot encode result[2].x: <why>") and returns
 * -1, which every packing function hands back up. */
static int fail(enc *e, int upto, const char *why) {
  char path[512];
  path_text(e, upto, path, sizeof path);
  snprintf(e->why, sizeof e->why, "cannot encode %s: %s", path, why);
  return -1;
}

/* ---- packing ------------------------------------------------------------------------------ */

static int pack_value(enc *e, int idx);

static int pack_number(enc *e, int idx) {
#if LIP_HAS_INTEGERS
  if (lua_isinteger(e->L, idx)) return msgpack_pack_int64(&e->pk, (int64_t)lua_tointeger(e->L, idx));
  return msgpack_pack_double(&e->pk, (double)lua_tonumber(e->L, idx));
#else
  /* Every number is a double here: integral ones travel as integers (compact, and what other
   * languages expect), the rest (fractions, -0.0, inf, nan, beyond 2^63) as doubles. */
  double d = (double)lua_tonumber(e->L, idx);
  if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0 &&
      !(d == 0 && signbit(d)))
    return msgpack_pack_int64(&e->pk, (int64_t)d);
  return msgpack_pack_double(&e->pk, d);
#endif
}

/* True when the key at `k` is a positive integer; its value in *out. */
static int positive_int_key(lua_State *L, int k, lua_Integer *out) {
  if (lua_type(L, k) != LUA_TNUMBER) return 0;
#if LIP_HAS_INTEGERS
  if (!lua_isinteger(L, k)) return 0;
  *out = lua_tointeger(L, k);
  return *out >= 1;
#else
  double d = (double)lua_tonumber(L, k);
  if (!(d >= 1 && d <= 9007199254740992.0 && d == floor(d))) return 0;
  *out = (lua_Integer)d;
  return 1;
#endif
}

static int pack_table(enc *e, int idx) {
  lua_State *L = e->L;
  const void *p = lua_topointer(L, idx);
  for (int i = 0; i < e->depth; i++)
    if (e->open[i] == p) return fail(e, e->plen, "a table that contains itself (a cycle)");
  if (e->depth >= MAX_DEPTH) {
    char why[96];
    snprintf(why, sizeof why, "tables nested more than %d levels deep", MAX_DEPTH);
    return fail(e, e->plen, why);
  }
  if (!lua_checkstack(L, 6)) return fail(e, e->plen, "out of Lua stack space");
  e->open[e->depth++] = p;

  size_t n = 0;
  lua_Integer max = 0, k;
  int array = 1;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    n++;
    if (array) {
      if (positive_int_key(L, -2, &k)) {
        if (k > max) max = k;
      } else {
        array = 0;
      }
    }
    lua_pop(L, 1);
  }
  int rc;
  if (array && n > 0 && (size_t)max == n) {
    if ((rc = msgpack_pack_array(&e->pk, n)) != 0) return rc;
    for (lua_Integer i = 1; i <= (lua_Integer)n; i++) {
      lua_rawgeti(L, idx, (int)i);
      e->path[e->plen++] = (struct seg){SEG_INDEX, i, 0};
      rc = pack_value(e, lua_gettop(L));
      e->plen--;
      lua_pop(L, 1);
      if (rc) return rc;
    }
  } else {
    if ((rc = msgpack_pack_map(&e->pk, n)) != 0) return rc;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
      int key = lua_gettop(L) - 1;
      int t = lua_type(L, key);
      if (t != LUA_TSTRING && t != LUA_TNUMBER && t != LUA_TBOOLEAN && t != LUA_TTABLE) {
        char why[96];
        snprintf(why, sizeof why, "it has a key of type %s", luaL_typename(L, key));
        return fail(e, e->plen, why);
      }
      e->path[e->plen++] = (struct seg){SEG_KEY, 0, key};
      rc = pack_value(e, key);
      if (!rc) rc = pack_value(e, key + 1);
      e->plen--;
      lua_pop(L, 1);
      if (rc) {
        lua_pop(L, 1);
        return rc;
      }
    }
  }
  e->depth--;
  return 0;
}

static int pack_value(enc *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL:
    return msgpack_pack_nil(&e->pk);
  case LUA_TBOOLEAN:
    return lua_toboolean(L, idx) ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk);
  case LUA_TNUMBER:
    return pack_number(e, idx);
  case LUA_TSTRING: {
    size_t n;
    const char *s = lua_tolstring(L, idx, &n);
    int rc = msgpack_pack_str(&e->pk, n);
    return rc ? rc : msgpack_pack_str_body(&e->pk, s, n);
  }
  case LUA_TTABLE:
    return pack_table(e, idx);
  default: {
    char why[96];
    snprintf(why, sizeof why, "a %s cannot be serialized", luaL_typename(L, idx));
    return fail(e, e->plen, why);
  }
  }
}

static void enc_init(enc *e, lua_State *L, const char *root, ip_write_fn w, void *ctx) {
  e->L = L;
  e->w = w;
  e->wctx = ctx;
  e->depth = 0;
  e->plen = 0;
  e->root = root;
  e->why[0] = '\0';
  msgpack_packer_init(&e->pk, e, write_cb);
}

static int lmp_encode(const ip_serializer *s, const void *value, ip_write_fn w, void *ctx) {
  (void)s;
  const lip_call *c = value;
  enc e;
  enc_init(&e, c->L, "result", w, ctx);
  e.plen = 1;
  int rc = msgpack_pack_array(&e.pk, (size_t)c->nres);
  for (int i = 0; rc == 0 && i < c->nres; i++) {
    e.path[0] = (struct seg){SEG_INDEX, i + 1, 0};
    rc = pack_value(&e, c->first_res + i);
  }
  if (e.why[0]) ip_raise_error(IP_EENCODE, 0, "EENCODE", e.why, NULL); /* fails the call */
  return rc;
}

typedef struct membuf {
  msgpack_sbuffer sb;
  size_t max;
} membuf;

static int membuf_write(void *ctx, const void *buf, size_t len) {
  membuf *m = ctx;
  if (len > m->max - m->sb.size) return -1;
  return msgpack_sbuffer_write(&m->sb, buf, len);
}

char *lip_msgpack_pack_value(lua_State *L, int idx, size_t max, size_t *len, char *why,
                             size_t whylen) {
  int top = lua_gettop(L);
  idx = lua_absindex(L, idx);
  membuf m;
  msgpack_sbuffer_init(&m.sb);
  m.max = max;
  enc e;
  enc_init(&e, L, "err.value", membuf_write, &m);
  int rc = pack_value(&e, idx);
  lua_settop(L, top);
  if (rc == 0) {
    *len = m.sb.size;
    return m.sb.data ? m.sb.data : strdup("");
  }
  if (e.why[0]) snprintf(why, whylen, "%s", e.why);
  else if (m.sb.size + 64 >= max) snprintf(why, whylen, "its encoding takes more than %zu bytes", max);
  else snprintf(why, whylen, "out of memory");
  msgpack_sbuffer_destroy(&m.sb);
  return NULL;
}

int lip_msgpack_pack_args(lua_State *L, int first, int nargs, ip_write_fn w, void *ctx,
                          char *why, size_t whylen) {
  int top = lua_gettop(L);
  enc e;
  enc_init(&e, L, "args", w, ctx);
  e.plen = 1;
  int rc = msgpack_pack_array(&e.pk, (size_t)nargs);
  for (int i = 0; rc == 0 && i < nargs; i++) {
    e.path[0] = (struct seg){SEG_INDEX, i + 1, 0};
    rc = pack_value(&e, first + i);
  }
  lua_settop(L, top);
  if (e.why[0]) {
    snprintf(why, whylen, "%s", e.why);
    return -1;
  }
  return rc;
}

/* Our encoder with the plugin's decoder: same wire name, so either side interoperates with a
 * C program using ip_serializer_msgpack(). */
static ip_serializer lmp = {
    .abi = IP_SERIALIZER_ABI,
    .name = "msgpack",
    .encode = lmp_encode,
};

const ip_serializer *lip_msgpack_serializer(void) {
  if (!lmp.decode) {
    const ip_serializer *plugin = ip_serializer_msgpack();
    lmp.free_value = plugin->free_value;
    lmp.decode = plugin->decode;
  }
  return &lmp;
}

/* ---- unpacking ---------------------------------------------------------------------------- */

static int push_object(lua_State *L, const msgpack_object *o) {
  switch (o->type) {
  case MSGPACK_OBJECT_NIL:
    lua_pushnil(L);
    return 0;
  case MSGPACK_OBJECT_BOOLEAN:
    lua_pushboolean(L, o->via.boolean);
    return 0;
  case MSGPACK_OBJECT_POSITIVE_INTEGER:
    if (o->via.u64 <= (uint64_t)INT64_MAX) lua_pushinteger(L, (lua_Integer)o->via.u64);
    else lua_pushnumber(L, (lua_Number)o->via.u64);
    return 0;
  case MSGPACK_OBJECT_NEGATIVE_INTEGER:
    lua_pushinteger(L, (lua_Integer)o->via.i64);
    return 0;
  case MSGPACK_OBJECT_FLOAT32:
  case MSGPACK_OBJECT_FLOAT64:
    lua_pushnumber(L, (lua_Number)o->via.f64);
    return 0;
  case MSGPACK_OBJECT_STR:
    lua_pushlstring(L, o->via.str.ptr, o->via.str.size);
    return 0;
  case MSGPACK_OBJECT_BIN:
    lua_pushlstring(L, o->via.bin.ptr, o->via.bin.size);
    return 0;
  case MSGPACK_OBJECT_ARRAY: {
    if (!lua_checkstack(L, 3)) return -1;
    uint32_t n = o->via.array.size;
    lua_createtable(L, (int)(n > 1u << 24 ? 1u << 24 : n), 0);
    for (uint32_t i = 0; i < n; i++) {
      if (push_object(L, &o->via.array.ptr[i]) < 0) return -1;
      lua_rawseti(L, -2, (int)i + 1);
    }
    return 0;
  }
  case MSGPACK_OBJECT_MAP: {
    if (!lua_checkstack(L, 4)) return -1;
    uint32_t n = o->via.map.size;
    lua_createtable(L, 0, (int)(n > 1u << 24 ? 1u << 24 : n));
    for (uint32_t i = 0; i < n; i++) {
      if (push_object(L, &o->via.map.ptr[i].key) < 0) return -1;
      /* nil and NaN cannot be keys: a foreign encoder's entry we have to drop */
      if (lua_isnil(L, -1) || (lua_type(L, -1) == LUA_TNUMBER && lua_tonumber(L, -1) != lua_tonumber(L, -1))) {
        lua_pop(L, 1);
        continue;
      }
      if (push_object(L, &o->via.map.ptr[i].val) < 0) return -1;
      lua_rawset(L, -3);
    }
    return 0;
  }
  default:
    lua_pushfstring(L, "unsupported MessagePack type %d (an extension?) in the result", (int)o->type);
    return -2;
  }
}

int lip_msgpack_push(lua_State *L, const msgpack_object *o) {
  int top = lua_gettop(L);
  int rc;
  if (o->type != MSGPACK_OBJECT_ARRAY) { /* not our envelope: a foreign encoder's one value */
    rc = push_object(L, o);
    if (rc == 0) return 1;
  } else {
    uint32_t n = o->via.array.size;
    if (n > 1000000 || !lua_checkstack(L, (int)n + 8)) {
      lua_settop(L, top);
      lua_pushfstring(L, "too many results to return (%d)", (int)n);
      return -1;
    }
    rc = 0;
    for (uint32_t i = 0; rc == 0 && i < n; i++) rc = push_object(L, &o->via.array.ptr[i]);
    if (rc == 0) return (int)n;
  }
  if (rc == -2) {
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
  } else {
    lua_settop(L, top);
    lua_pushliteral(L, "not enough Lua stack to decode the result");
  }
  return -1;
}

int lip_msgpack_push_args(lua_State *L, const void *buf, size_t len) {
  const ip_serializer *plugin = ip_serializer_msgpack();
  void *v = NULL;
  if (plugin->decode(plugin, buf, len, &v) != 0) {
    lua_pushliteral(L, "the arguments are not one well-formed MessagePack object");
    return -1;
  }
  const msgpack_object *o = v;
  int n;
  if (o->type != MSGPACK_OBJECT_ARRAY) {
    lua_pushliteral(L, "the arguments are not a MessagePack array");
    n = -1;
  } else {
    n = lip_msgpack_push(L, o);
  }
  if (plugin->free_value) plugin->free_value(plugin, v);
  return n;
}

int lip_msgpack_push_value(lua_State *L, const void *buf, size_t len) {
  const ip_serializer *plugin = ip_serializer_msgpack();
  void *v = NULL;
  if (plugin->decode(plugin, buf, len, &v) != 0) {
    lua_pushliteral(L, "it is not one well-formed MessagePack object");
    return -1;
  }
  int top = lua_gettop(L);
  int rc = lua_checkstack(L, 4) ? push_object(L, v) : -1;
  if (plugin->free_value) plugin->free_value(plugin, v);
  if (rc == -2) { /* the message is on top of what was pushed so far */
    lua_replace(L, top + 1);
    lua_settop(L, top + 1);
  } else if (rc < 0) {
    lua_settop(L, top);
    lua_pushliteral(L, "not enough Lua stack to decode it");
  }
  return rc < 0 ? -1 : 0;
}
