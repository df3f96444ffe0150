/* qlun — the management command lun-set-copy-on-read {lun, enable}
 * (handler/lun_copy_on_read.c does the work). */
#include "handler/ctl-internal.h"
#include "handler/registry.h"

JsonNode *ctl_lun_set_copy_on_read(JsonObject *args, struct ctl_error *e)
{
    bool enable = json_object_get_boolean_member(args, "enable");
    struct qlun_dev *d = ctl_get_lun(args, e);
    if (!d)
        return NULL;
    char err[512] = "";
    int ret = qlun_dev_set_copy_on_read(d, enable, err, sizeof(err));
    lun_registry_put(d);
    if (ret < 0)
        ctl_set_errno_error(e, ret, err);
    return NULL;
}
