"""The `siq` command line: main.py (parser and the table of subcommands), options.py (shared option groups, value
parsers, options -> configs), commands.py (one thin function per subcommand over codegen/api.py)."""
from .main import SUBCOMMANDS, build_parser, main
from .options import plus_config, quant_config, siq_config, train_config

__all__ = ["SUBCOMMANDS", "build_parser", "main", "plus_config", "quant_config", "siq_config", "train_config"]
