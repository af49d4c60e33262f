# Fails unless every repository path that the README, the docs, the headers, the examples,
# the tests or the benchmarks name exists, so that a comment or a doc never sends a reader to a
# file that was renamed or never written. Run as
#   cmake -DROOT=<repository> -P tests/doc_paths.cmake
#
# What counts as a named path:
#  1. in every scanned file, a token such as `docs/theory.md` or `include/cospec/token.hpp`:
#     a top-level folder of the repository, a slash, and a file name with a known extension,
#     checked relative to ROOT. A token that is part of a longer path (`build/release/...`,
#     `../shared/...`, a URL) is not one;
#  2. in Markdown files, outside fenced code blocks, every link target `](target)`, with its
#     `#anchor` removed, checked relative to the linking file. URLs, pure anchors, targets
#     outside the repository (`../shared/...`) and build products (`build/...`) are ignored.
# It also requires that some file other than docs/algorithm.md names docs/algorithm.md, the
# account of the method that the headers cite.
cmake_minimum_required(VERSION 3.20)

if(NOT DEFINED ROOT)
  message(FATAL_ERROR "doc_paths.cmake: pass -DROOT=<repository root>")
endif()
set(root "${ROOT}")
cmake_path(ABSOLUTE_PATH root NORMALIZE)  # relative to the working directory
if(NOT root MATCHES "/$")  # "a/b/" and "a/b" alike
  string(APPEND root "/")
endif()

set(top_folders "docs|include|examples|tests|bench|cmake")
set(extensions "md|hpp|cpp|cmake|sh|png|csv|gp|txt|json")
set(path_chars "A-Za-z0-9_./-")

file(GLOB markdown_files RELATIVE "${root}" "${root}README.md" "${root}docs/*.md")
file(GLOB_RECURSE code_files RELATIVE "${root}" "${root}include/*.hpp" "${root}examples/*")
file(GLOB test_files RELATIVE "${root}" "${root}tests/*.cpp" "${root}bench/*.cpp")
list(APPEND code_files ${test_files})
list(SORT markdown_files)
list(SORT code_files)
if(NOT markdown_files OR NOT code_files)
  message(FATAL_ERROR "doc_paths.cmake: found nothing to scan under ${root}")
endif()

set(missing "")
set(checked 0)
set(algorithm_named FALSE)

# The line of the first occurrence of `needle` in `text`, for the report.
function(line_of text needle out)
  string(FIND "${text}" "${needle}" position)
  if(position LESS 0)
    set(${out} "?" PARENT_SCOPE)
    return()
  endif()
  string(SUBSTRING "${text}" 0 ${position} before)
  string(REGEX MATCHALL "\n" newlines "${before}")
  list(LENGTH newlines count)
  math(EXPR line "${count} + 1")
  set(${out} ${line} PARENT_SCOPE)
endfunction()

# Records that `file` names `path` (relative to the root) by writing `needle`. A function, not
# a macro: a macro would evaluate the `${...}` that the scanned text itself contains.
function(check_named file text path needle)
  math(EXPR checked "${checked} + 1")
  set(checked ${checked} PARENT_SCOPE)
  if(path STREQUAL "docs/algorithm.md" AND NOT file STREQUAL "docs/algorithm.md")
    set(algorithm_named TRUE PARENT_SCOPE)
  endif()
  if(NOT EXISTS "${root}${path}")
    line_of("${text}" "${needle}" where)
    list(APPEND missing "  ${path}  (named in ${file}:${where})")
    set(missing "${missing}" PARENT_SCOPE)
  endif()
endfunction()

# Rule 1: tokens naming a file under a top-level folder.
function(scan_tokens file text)
  string(REGEX MATCHALL "[${path_chars}]*(${top_folders})/[${path_chars}]*" runs "${text}")
  list(REMOVE_DUPLICATES runs)
  foreach(run IN LISTS runs)
    string(REGEX REPLACE "\\.+$" "" token "${run}")  # the full stop of a sentence
    string(REGEX REPLACE "^(\\./)+" "" token "${token}")
    if(token MATCHES "^(${top_folders})/[${path_chars}]+\\.(${extensions})$")
      check_named("${file}" "${text}" "${token}" "${token}")
    endif()
  endforeach()
  set(missing "${missing}" PARENT_SCOPE)
  set(checked ${checked} PARENT_SCOPE)
  set(algorithm_named ${algorithm_named} PARENT_SCOPE)
endfunction()

# `text` without its fenced code blocks (where `[](...)` is C++, not a link).
function(strip_fences text out)
  set(kept "")
  while(TRUE)
    string(FIND "${text}" "```" open)
    if(open LESS 0)
      break()
    endif()
    string(SUBSTRING "${text}" 0 ${open} before)
    string(APPEND kept "${before}")
    math(EXPR after_open "${open} + 3")
    string(SUBSTRING "${text}" ${after_open} -1 text)
    string(FIND "${text}" "```" close)
    if(close LESS 0)
      set(text "")
      break()
    endif()
    math(EXPR after_close "${close} + 3")
    string(SUBSTRING "${text}" ${after_close} -1 text)
  endwhile()
  string(APPEND kept "${text}")
  set(${out} "${kept}" PARENT_SCOPE)
endfunction()

# Rule 2: Markdown link targets, relative to the linking file.
function(scan_links file text)
  strip_fences("${text}" prose)
  # Square brackets would group the elements of a CMake list: the link marker becomes text.
  string(REPLACE "](" "<link>(" prose "${prose}")
  string(REGEX MATCHALL "<link>\\([^);\n]*\\)" links "${prose}")
  list(REMOVE_DUPLICATES links)
  cmake_path(GET file PARENT_PATH folder)
  foreach(link IN LISTS links)
    string(REGEX REPLACE "^<link>\\(<?([^ >)]*).*$" "\\1" target "${link}")
    string(REPLACE "<link>" "]" link "${link}")  # as written, to find its line
    string(REGEX REPLACE "#.*$" "" target "${target}")
    if(target STREQUAL "" OR target MATCHES "^[A-Za-z][A-Za-z0-9+.-]*:" OR target MATCHES "^/")
      continue()  # a pure anchor, a URL or mailto:, an absolute path
    endif()
    if(target MATCHES "^(\\.\\./)+shared/")
      continue()  # the workspace's notes next to the repository, not part of it
    endif()
    if(folder STREQUAL "")
      set(path "${target}")
    else()
      set(path "${folder}/${target}")
    endif()
    cmake_path(NORMAL_PATH path)
    string(REGEX REPLACE "/$" "" path "${path}")
    if(path MATCHES "^\\.\\.(/|$)" OR path MATCHES "^build/")
      continue()  # outside the repository (../shared/...), or a build product
    endif()
    check_named("${file}" "${text}" "${path}" "${link}")
  endforeach()
  set(missing "${missing}" PARENT_SCOPE)
  set(checked ${checked} PARENT_SCOPE)
  set(algorithm_named ${algorithm_named} PARENT_SCOPE)
endfunction()

foreach(file IN LISTS markdown_files code_files)
  file(READ "${root}${file}" text)
  scan_tokens("${file}" "${text}")
  if(file MATCHES "\\.md$")
    scan_links("${file}" "${text}")
  endif()
endforeach()

list(LENGTH markdown_files markdown_count)
list(LENGTH code_files code_count)
if(NOT algorithm_named)
  list(APPEND missing "  a reference to docs/algorithm.md  (named by no file other than itself)")
endif()
if(missing)
  list(LENGTH missing missing_count)
  list(JOIN missing "\n" report)
  message(FATAL_ERROR "${missing_count} named path(s) do not exist under ${root}:\n${report}")
endif()
message(STATUS "doc_paths: all ${checked} paths named in ${markdown_count} Markdown and ${code_count} other "
               "files exist")
