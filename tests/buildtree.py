"""A made-up mini "tree" whose build follows the contract verifier.build relies on.

Like xen/Makefile: ``make defconfig``/``olddefconfig`` write ``.config``; the ``$(TARGET)``
recipe generates headers (``autoconf.h``, ``compile.h``, ``asm-offsets.h`` from an
``asm-offsets.c`` compiled to assembly) and its last line builds the whole thing (which
preparation must never run: it leaves ``whole-build-ran``); ``%.o %.i %.s: %.c`` builds one
unit with per-file flags. ``common/multi.c`` is a unit only through ``multi_2.c`` and
``multi_3.c``, which #include it (as shadow's ``guest_N.c`` include ``multi.c``).

``rules_mk=True`` gives the pre-4.17 shape instead: ``make build`` runs
``$(MAKE) -f Rules.mk _build``, Rules.mk reads Makefile, units are built by
``$(MAKE) -f $(BASEDIR)/Rules.mk -C <dir> <obj>`` in their directory, and
``common/multi.c`` is built twice by a pattern rule ``multi_%.o: multi.c``.
"""

from __future__ import annotations

from pathlib import Path

KCONFIG = """\
config X86
\tdef_bool y

config PV
\tbool "PV guests"

config HVM
\tbool "HVM guests"

config SHADOW_PAGING
\tbool "shadow paging"
\tdepends on HVM
"""

MAKEFILE = r"""
include $(XEN_ROOT)/Config.mk
TARGET := xen
XEN_CFLAGS := -O1 -std=gnu99 -Wall -Werror -Iinclude -Iarch/x86/include \
	-include include/generated/autoconf.h
CFLAGS-widget.o := -DWIDGET_FLAG=1

.PHONY: defconfig olddefconfig FORCE
FORCE:

defconfig:
	printf 'CONFIG_X86=y\nCONFIG_PV=y\n' > .config
	@echo "configuration written to .config"

olddefconfig:
	sort -u .config > .config.new && mv .config.new .config

include/generated/autoconf.h: .config
	mkdir -p include/generated
	sed -n 's/^\(CONFIG_[A-Z0-9_]*\)=y$$/#define \1 1/p' .config > $@

include/xen/compile.h: FORCE
	echo '#define XEN_COMPILER "$(shell $(CC) -dumpversion)"' > $@

asm-offsets.s: arch/x86/asm-offsets.c include/generated/autoconf.h
	$(CC) $(XEN_CFLAGS) -S -o $@ $<

arch/x86/include/asm/asm-offsets.h: asm-offsets.s
	mkdir -p $(dir $@)
	sed -rn 's/.*==>(#define [A-Za-z_]+) [$$]?([0-9]+) <==.*/\1 \2/p' $< > $@

$(TARGET): FORCE
	$(MAKE) include/generated/autoconf.h
	$(MAKE) include/xen/compile.h
	$(MAKE) arch/x86/include/asm/asm-offsets.h
	touch whole-build-ran && $(CC) $(XEN_CFLAGS) -o $@ common/*.c

%.o %.i %.s: %.c FORCE
	$(CC) $(XEN_CFLAGS) $(CFLAGS-$(@F)) -c $< -o $@
"""

# Pre-4.17 shape: Makefile exports what Rules.mk needs and runs `-f Rules.mk _build`.
MAKEFILE_RULES = r"""
export BASEDIR := $(CURDIR)
export XEN_ROOT := $(BASEDIR)/..
include $(XEN_ROOT)/Config.mk
export TARGET := xen

.PHONY: build defconfig olddefconfig FORCE
FORCE:
build install:: .config
build install clean::
	$(MAKE) -f Rules.mk _$@

defconfig:
	printf 'CONFIG_X86=y\nCONFIG_PV=y\n' > .config

olddefconfig:
	sort -u .config > .config.new && mv .config.new .config

.PHONY: _build
_build: $(TARGET)

include/generated/autoconf.h: .config
	mkdir -p include/generated
	sed -n 's/^\(CONFIG_[A-Z0-9_]*\)=y$$/#define \1 1/p' .config > $@

include/xen/compile.h: FORCE
	echo '#define XEN_COMPILER "$(shell $(CC) -dumpversion)"' > $@

include/asm-x86/asm-offsets.h: arch/x86/asm-offsets.s
	mkdir -p include/asm-x86
	sed -rn 's/.*==>(#define [A-Za-z_]+) [$$]?([0-9]+) <==.*/\1 \2/p' $< > $@

$(TARGET): FORCE
	$(MAKE) -f $(BASEDIR)/Rules.mk include/generated/autoconf.h
	$(MAKE) -f $(BASEDIR)/Rules.mk include/xen/compile.h
	$(MAKE) -f $(BASEDIR)/Rules.mk -C arch/x86 asm-offsets.s
	$(MAKE) -f $(BASEDIR)/Rules.mk include/asm-x86/asm-offsets.h
	touch whole-build-ran && $(CC) -o $@ common/*.c
"""

RULES_MK = r"""
ifeq ($(BASEDIR),)
$(error BASEDIR is not set: Rules.mk is read through xen/Makefile)
endif
include $(XEN_ROOT)/Config.mk
XEN_CFLAGS := -O1 -std=gnu99 -Wall -Werror -I$(BASEDIR)/include \
	-include $(BASEDIR)/include/generated/autoconf.h
include Makefile

%.o: %.c Makefile
	$(CC) $(XEN_CFLAGS) $(CFLAGS-y) -c $< -o $@

%.s: %.c Makefile
	$(CC) $(XEN_CFLAGS) -MMD -MF .$(@F).d -S -o $@ $<

-include .*.d
"""

ASM_OFFSETS_C = r"""
struct page_desc { unsigned long count; unsigned long type; };

#define DEFINE(sym, val) \
    asm volatile ("\n.ascii \"==>#define " #sym " %0 <==\"" : : "i" (val))

void dummy(void)
{
    DEFINE(PAGE_DESC_type, __builtin_offsetof(struct page_desc, type));
}
"""

WIDGET_H = """\
#ifndef WIDGET_H
#define WIDGET_H
int frob(int x);
int widget_offset(void);
#endif
"""

WIDGET_C = """\
#include <xen/compile.h>
#include <xen/widget.h>
#include <asm/asm-offsets.h>

int widget_offset(void)
{
    return PAGE_DESC_type + WIDGET_FLAG;
}

int frob(int x)
{
    int twice = x * 2;

    return twice + 1;
}
"""

MULTI_C = """\
#include <xen/widget.h>

int multi_level(void)
{
    return LEVELS;
}
"""


def write_tree(root: Path, *, rules_mk: bool = False) -> Path:
    """Write the mini tree under ``root`` (``root/xen``, ``root/Config.mk``); return root."""
    files = {
        "Config.mk": "CC := gcc\n",
        "config/x86_64.mk": "# made up\n",
        "xen/Kconfig": KCONFIG,
        "xen/include/xen/widget.h": WIDGET_H,
        "xen/common/widget.c": WIDGET_C,
        "xen/common/multi.c": MULTI_C,
    }
    if rules_mk:
        files["xen/Makefile"] = MAKEFILE_RULES
        files["xen/Rules.mk"] = RULES_MK
        files["xen/common/Makefile"] = ("obj-y += widget.o multi_2.o multi_3.o\n"
                                        "CFLAGS-y += -DWIDGET_FLAG=1\n"
                                        "multi_%.o: multi.c Makefile\n"
                                        "\t$(CC) $(XEN_CFLAGS) -DLEVELS=$* -c $< -o $@\n")
        files["xen/arch/x86/Makefile"] = "obj-y += asm-offsets.o\n"
        files["xen/arch/x86/asm-offsets.c"] = ASM_OFFSETS_C
        files["xen/common/widget.c"] = WIDGET_C.replace("<asm/asm-offsets.h>",
                                                        "<asm-x86/asm-offsets.h>")
    else:
        files["xen/Makefile"] = "XEN_ROOT := $(CURDIR)/..\n" + MAKEFILE
        files["xen/common/Makefile"] = "obj-y += widget.o multi_2.o multi_3.o\n"
        files["xen/common/multi_2.c"] = '#define LEVELS 2\n#include "multi.c"\n'
        files["xen/common/multi_3.c"] = '#define LEVELS 3\n#include "multi.c"\n'
        files["xen/arch/x86/asm-offsets.c"] = ASM_OFFSETS_C
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root
