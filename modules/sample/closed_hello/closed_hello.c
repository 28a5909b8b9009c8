// SPDX-License-Identifier: MIT
/*
 * closed_hello: a module whose MODULE_LICENSE is GPL-incompatible ("Proprietary"), for
 * modvisor's license rule. Vetting refuses it unless its policy accepts that license
 * (`licenses: ["Proprietary"]`); a kernel that loads it taints itself (P), and the VM's
 * module taints show it. It may use no GPL-only kernel symbol, so it only says hello.
 * (The source itself is MIT-licensed; the declared license is what is tested.)
 */
#include <linux/module.h>

static char *greeting = "hello";
module_param(greeting, charp, 0444);
MODULE_PARM_DESC(greeting, "What it prints when loaded");

static int __init closed_hello_init(void)
{
	pr_info("closed_hello: %s\n", greeting);
	return 0;
}

static void __exit closed_hello_exit(void)
{
	pr_info("closed_hello: bye\n");
}

module_init(closed_hello_init);
module_exit(closed_hello_exit);
MODULE_LICENSE("Proprietary");
MODULE_DESCRIPTION("A GPL-incompatible module: loads only where a policy accepts its license");
