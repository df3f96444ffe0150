/* Unit tests: iovec helpers. */
#include <stdint.h>

#include "common/iov.h"

#include "check.h"

int main(void)
{
    uint8_t a[3] = { 1, 2, 3 }, b[0 + 1] = { 4 }, c[5] = { 5, 6, 7, 8, 9 };
    struct iovec v[] = { { a, 3 }, { b, 0 }, { c, 5 } };
    uint8_t out[8];

    CHECK_EQ(iov_size(v, 3), 8);
    CHECK_EQ(iov_to_buf(v, 3, 2, out, 4), 4);
    CHECK(out[0] == 3 && out[1] == 5 && out[2] == 6 && out[3] == 7);
    CHECK_EQ(iov_to_buf(v, 3, 6, out, 10), 2);      /* short iov */

    struct iovec s[4];
    int n = iov_slice(s, 4, v, 3, 1, 5);
    CHECK_EQ(n, 2);
    CHECK(s[0].iov_base == a + 1 && s[0].iov_len == 2);
    CHECK(s[1].iov_base == c && s[1].iov_len == 3);
    CHECK_EQ(iov_slice(s, 1, v, 3, 1, 5), -1);      /* dst too small */
    CHECK_EQ(iov_slice(s, 4, v, 3, 4, 10), -1);     /* src too short */

    CHECK(!iov_is_zero(v, 3));
    iov_memset(v, 3, 0, 0, 8);
    CHECK(iov_is_zero(v, 3));
    CHECK(buf_is_zero(a, 0));

    /* The cursor skips empty entries and advances across them. */
    struct iov_cursor cur;
    CHECK_EQ(iov_cursor_init(&cur, v, 3), 0);
    iov_cursor_advance(&cur, 3);
    CHECK(iov_cursor_vec(&cur)->iov_base == c);
    iov_cursor_advance(&cur, 4);
    CHECK(!iov_cursor_done(&cur) && iov_cursor_vec(&cur)->iov_len == 1);
    iov_cursor_advance(&cur, 1);
    CHECK(iov_cursor_done(&cur));
    iov_cursor_free(&cur);
    return check_summary("test_iov");
}
