/**
 * xenstored's default quotas (tools/xenstore/xenstored_core.c). Like xenstored, the simulation
 * applies them to unprivileged domains only: dom0 is never limited.
 */

/** Nodes a domain may own (quota_nb_entry_per_domain). */
export const NODE_QUOTA = 1000;
/**
 * The error for going over NODE_QUOTA: ENOSPC, as C xenstored's create_node answers (PROTOCOL.md
 * §3 says E2BIG; the real daemon wins).
 */
export const NODE_QUOTA_ERROR = 'ENOSPC';
/** Open transactions per domain (quota_max_transaction); more give ENOSPC. */
export const TRANSACTION_QUOTA = 10;
/** Watches per domain (quota_nb_watch_per_domain); more give E2BIG. */
export const WATCH_QUOTA = 128;
/** Entries in one node's permission list (quota_nb_perms_per_node); more give ENOSPC. */
export const PERMISSIONS_QUOTA = 5;
