"""Keep passwords out of log lines, error messages and repr()."""
import re

_URL_PASSWORD = re.compile(r'(://[^:/@\s]*:)[^/\s]*@')
_DSN_PASSWORD = re.compile(r'(\bpass(?:word|wd)?\s*=\s*)(\'[^\']*\'|\S+)',
                           re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with any URL or DSN password replaced by ``***``."""
    text = _URL_PASSWORD.sub(r'\1***@', text)
    return _DSN_PASSWORD.sub(r'\1***', text)
