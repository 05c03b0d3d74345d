#!/usr/bin/perl
# Writes the section-3 manual in scdoc form from the public headers, whose comments are the
# reference: a page per exported function and per type (the comment above a declaration, or
# the one it shares with the declarations next to it), and inparallel(3), the overview (the
# header's opening comment and every page by section). scdoc(1) turns each into roff.
#
#   perl doc/mangen.pl OUTDIR include/inparallel.h include/inparallel/msgpack.h ...
use strict;
use warnings;

my ($out, @headers) = @ARGV;
die "usage: mangen.pl OUTDIR HEADER...\n" unless $out && @headers;
-d $out or mkdir $out or die "mangen.pl: $out: $!\n";

my @pages;      # { name, kind, decl, doc (lines), section, header }
my $errno_doc;  # the error codes, for ip_errno
my ($enum_doc, $enum_decl, $enum_end) = (undef, undef, -10);  # an unnamed enum of flags
my %seen;
my $overview;   # the first header's opening comment
my @sections;   # section titles, in order

for my $header (@headers) {
  open my $fh, '<', $header or die "mangen.pl: $header: $!\n";
  my @lines = <$fh>;
  close $fh;
  chomp @lines;
  (my $include = $header) =~ s{^.*?include/}{};
  my ($doc, $doc_end) = (undef, -10);  # the last comment and the line it ended on
  my ($prev_doc, $prev_end) = (undef, -10);
  my $section = $header =~ m{/inparallel\.h$} ? 'Basics' : 'Serializer plugins';
  for (my $i = 0; $i < @lines; $i++) {
    my $l = $lines[$i];
    if ($l =~ m{^\s*/\*}) {                       # a comment, maybe several lines
      my @c = ($l);
      while ($c[-1] !~ m{\*/} && $i + 1 < @lines) { push @c, $lines[++$i]; }
      my @text = strip_comment(@c);
      if (@text == 1 && $text[0] =~ /^-+$/) { next; }       # a rule
      if (@text == 1 && $i > 0 && $lines[$i - 1] =~ m{^/\* -{20,}}) {   # a section title
        ($section = $text[0]) =~ s/\s+$//;
        push @sections, $section;
        $doc = undef;
        next;
      }
      $overview //= [@text] if $header eq $headers[0];
      ($doc, $doc_end) = ([@text], $i);
      next;
    }
    my ($name, $kind, $decl, $trailing, $own_doc);
    if ($l =~ /^#define IP_ERRNO_MAP/) {               # the error codes: ip_errno's page
      my @codes;
      while ($lines[$i] =~ /\\\s*$/ && $i + 1 < @lines) {
        my $x = $lines[++$i];
        push @codes, "- IP_$1 ($2): $3" if $x =~ /XX\((\w+),\s*([^,]+),\s*"([^"]*)"\)/;
      }
      $errno_doc = [@{ $doc // [] }, '', 'The codes, with the text ip_strerror() gives:', '', @codes];
      next;
    }
    if ($l =~ /^enum\s*\{/) {                          # flags a function takes: on its page
      my @d = ($l);
      while ($d[-1] !~ /^\}/ && $i + 1 < @lines) { push @d, $lines[++$i]; }
      ($enum_doc, $enum_decl, $enum_end) = ($doc_end == $i - @d ? $doc : undef, join("\n", @d), $i);
      next;
    }
    if ($l =~ /^IP_EXTERN\b/) {                       # a function, up to its ';'
      my @d = ($l);
      while ($d[-1] !~ /;/ && $i + 1 < @lines) { push @d, $lines[++$i]; }
      $decl = join("\n", @d);
      $decl =~ s/^IP_EXTERN\s+//;
      $decl =~ s/\s*IP_(?:PRINTF|NORETURN)\b(?:\([^)]*\))?//g;
      $decl =~ s/^\s*IP_NORETURN\s+//;
      ($name) = $decl =~ /\b(ip_\w+)\s*\(/;
      $kind = 'function';
      $trailing = $1 if $decl =~ s{\s*(/\*.*?\*/)\s*$}{};
      if ($enum_end == $i - 1) {     # the flags just above are this function's
        $own_doc = [@{ $enum_doc // [] }, ($trailing ? ('', $trailing =~ m{/\*\s*(.*?)\s*\*/}) : ())];
        $decl = "$enum_decl\n\n$decl";
        $trailing = undef;
      }
    } elsif ($l =~ /^typedef\s+struct\s+(ip_\w+)\s+(ip_\w+);(.*)$/) {   # an opaque handle
      ($name, $decl, $trailing) = ($2, "typedef struct $1 $2;", $3);
      $kind = 'type';
    } elsif ($l =~ /^typedef\s+.*\(\*(ip_\w+)\)\s*\(.*;/) {             # a function type
      ($name, $decl) = ($1, $l);
      $kind = 'type';
    } elsif ($l =~ /^(?:typedef\s+)?(?:struct|enum)\s*(ip_\w+)?\s*\{/) { # a struct or enum
      my @d = ($l);
      while ($d[-1] !~ /^\}/ && $i + 1 < @lines) { push @d, $lines[++$i]; }
      $decl = join("\n", @d);
      ($name) = $d[-1] =~ /^\}\s*(ip_\w+)\s*;/;
      $name //= $1;
      $kind = 'type';
      $own_doc = ['The error codes of the library.', '', @$errno_doc] if $name && $name eq 'ip_errno' && $errno_doc;
    }
    if (!$name) {
      ($prev_doc, $prev_end) = (undef, -10) if $l =~ /^\s*$/;
      next;
    }
    $trailing = undef unless $trailing && $trailing =~ m{/\*\s*(.*?)\s*\*/};
    my $text = $own_doc ? $own_doc
             : $trailing ? [$trailing =~ m{/\*\s*(.*?)\s*\*/}]
             : $doc_end == $i - scalar(split /\n/, $decl) ? $doc
             : $prev_end == $i - scalar(split /\n/, $decl) ? $prev_doc   # shares the comment above
             : undef;
    # A struct defined without a comment of its own: its members' comments, in the synopsis,
    # are its description.
    $text //= ["The $name structure; each member is described in the synopsis."]
      if $kind eq 'type' && $decl =~ /\{/;
    ($prev_doc, $prev_end) = ($text, $i);
    next if !$text || ($kind eq 'type' && $text->[0] =~ /^see /) || $seen{$name}++;  # defined below
    push @pages, { name => $name, kind => $kind, decl => $decl, doc => $text,
                   section => $section, header => $include };
  }
}

# ---- text -----------------------------------------------------------------------------------

sub strip_comment {
  my @t = @_;
  s{^\s*/\*\s?}{} for $t[0];
  s{\s*\*/\s*$}{} for $t[-1];
  for (@t[1 .. $#t]) { s{^\s*\*(?: |$)}{}; }
  s/\s+$// for @t;
  shift @t while @t && $t[0] eq '';
  pop @t while @t && $t[-1] eq '';
  return @t;
}

sub esc {  # scdoc's inline markup (*bold*, _underline_) and a line-leading heading or list
  my $s = shift;
  $s =~ s/([\\*_])/\\$1/g;
  $s =~ s/^([#-])/\\$1/;
  return $s;
}

# Paragraphs: prose is reflowed; a "- " list becomes scdoc's; anything indented (code, tables)
# stays as it is, in a literal block.
sub render {
  my @out;
  my @para;
  my $flush = sub {
    return unless @para;
    if (grep { /^ {2,}\S/ && !/^  \S/ } @para or grep { /\s{3,}\S/ } @para[1 .. $#para]) {
      push @out, '```', @para, '```', '';
    } elsif ($para[0] =~ /^\s*- /) {
      my @items;
      for (@para) {
        if (/^\s*- (.*)$/) { push @items, $1; } else { (my $c = $_) =~ s/^\s+//; $items[-1] .= " $c"; }
      }
      push @out, (map { '- ' . esc($_) } @items), '';
    } else {
      push @out, esc(join(' ', map { (my $x = $_) =~ s/^\s+//; $x } @para)), '';
    }
    @para = ();
  };
  for (@_) {
    if ($_ eq '') { $flush->(); next; }
    # A list item after prose, or a paragraph after a list, starts a paragraph of its own.
    $flush->() if @para && ((/^- / && $para[0] !~ /^- /) || (/^\S/ && !/^- / && $para[0] =~ /^- /));
    push @para, $_;
  }
  $flush->();
  return @out;
}

sub summary {  # the first sentence, for NAME
  my $s = join(' ', map { (my $x = $_) =~ s/^\s+//; $x } grep { $_ ne '' } @{ $_[0] });
  my ($depth, $end) = (0, length $s);
  for my $k (0 .. length($s) - 1) {          # the first '.' or ':' outside parentheses
    my $c = substr($s, $k, 1);
    $depth++ if $c eq '(';
    $depth-- if $c eq ')' && $depth;
    next unless $depth == 0 && ($c eq '.' || $c eq ':');
    next unless $k + 1 == length($s) || substr($s, $k + 1, 1) eq ' ';
    next if substr($s, 0, $k + 1) =~ /\b(?:e\.g|i\.e|etc)\.$/;
    $end = $k;
    last;
  }
  $s = substr($s, 0, $end);
  $s = substr($s, 0, 100) . '...' if length $s > 100;
  return $s =~ /^[A-Z][a-z]/ ? lc(substr($s, 0, 1)) . substr($s, 1) : $s;  # not NULL, SIGKILL
}

# ---- pages ------------------------------------------------------------------------------------

my %by_section;
push @{ $by_section{ $_->{section} } }, $_ for @pages;

for my $p (@pages) {
  my @same = grep { $_->{name} ne $p->{name} } @{ $by_section{ $p->{section} } };
  open my $fh, '>', "$out/$p->{name}.3.scd" or die "mangen.pl: $out/$p->{name}.3.scd: $!\n";
  print $fh join("\n",
    "$p->{name}(3) \"inparallel\" \"inparallel manual\"", '',
    '# NAME', '', esc("$p->{name} - " . summary($p->{doc})), '',
    '# SYNOPSIS', '', '```', "#include <$p->{header}>", '', $p->{decl}, '```', '',
    ($p->{header} =~ m{inparallel/(\w+)\.h}
       ? "Link with *-linparallel-$1 -linparallel* (*pkg-config --libs inparallel-$1*)."
       : "Link with *-linparallel* (*pkg-config --libs inparallel*)."), '',
    '# DESCRIPTION', '', render(@{ $p->{doc} }),
    "# SEE ALSO", '',
    join(', ', '*inparallel*(3)', map { "*" . esc($_->{name}) . "*(3)" } @same), ''), "\n";
  close $fh;
}

open my $fh, '>', "$out/inparallel.3.scd" or die "mangen.pl: $out/inparallel.3.scd: $!\n";
print $fh join("\n",
  'inparallel(3) "inparallel" "inparallel manual"', '',
  '# NAME', '', 'inparallel - run C functions in forked children or worker pools and get futures', '',
  '# SYNOPSIS', '', '```', '#include <inparallel.h>', '```', '',
  'Link with *-linparallel* (*pkg-config --cflags --libs inparallel*).', '',
  '# DESCRIPTION', '', render(@$overview));
for my $s ('Basics', @sections, 'Serializer plugins') {
  next unless $by_section{$s};
  print $fh "\n# ", uc($s), "\n\n";
  print $fh join("\n", map { '*' . esc($_->{name}) . '*(3) - ' . esc(summary($_->{doc})) . "\n" }
                           @{ $by_section{$s} }), "\n";
}
close $fh;
