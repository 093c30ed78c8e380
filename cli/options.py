"""Click options built from settings fields (alexsuite/settings.py), so each default and its
help text live in one place: the library's settings dataclass. tests/cli/test_options.py
checks that every option with a default comes from such a field."""

from __future__ import annotations

import click

from alexsuite.settings import default_of, field_of, help_of


class SettingOption(click.Option):
    """An option whose default and help come from `settings.<field>`."""

    def __init__(self, *args, settings=None, field: str = "", own_default=False, inverted=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.settings, self.field = settings, field
        self.own_default = own_default  # the command resolves the default itself (its help says how)
        self.inverted = inverted  # a --no-x flag: given, the setting is False; left out, its default (True)


def option(settings, field: str, *decls: str, **kwargs):
    """A click option for `settings.field`: the flag is --field-with-dashes unless `decls`
    names others, and the parameter keeps the field's name unless `decls` gives one."""
    default = default_of(settings, field)
    decls = decls or (f"--{field.replace('_', '-')}",)
    if not any(d.isidentifier() for d in decls):
        decls = (*decls, field)
    own_default = "default" in kwargs
    kwargs.setdefault("default", default)
    source = field_of(settings, field).metadata.get("source")
    if "help" in kwargs and source:  # a help of the command's own still names the setting's source
        kwargs["help"] += f" [source: {source}]"
    kwargs.setdefault("help", help_of(settings, field))
    switch = any("/" in d for d in decls)  # --x/--no-x
    inverted = default is True and not switch
    if isinstance(default, bool) and not switch:
        kwargs["is_flag"] = True
    if inverted:  # a flag that turns a default-on setting off (--no-pca-lighting): a plain flag, inverted
        # after parsing, since a flag whose default differs from click's reading of it varies by click version
        kwargs.update(default=False, callback=lambda ctx, param, value: not value)
    kwargs.setdefault("show_default", default is not None and (switch or not isinstance(default, bool)))
    return click.option(
        *decls, cls=SettingOption, settings=settings, field=field, own_default=own_default, inverted=inverted, **kwargs
    )
