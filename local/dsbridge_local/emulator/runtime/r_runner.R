# Child-process entry point that executes one R notebook, cell by cell, like a Databricks driver.
#
# Why: data scientists write some notebooks in R; the emulator must run them with the same dbutils
# subset as Python notebooks. The supervisor has already flattened the notebook into cells (%run
# inlined, %md dropped) and passes them in a JSON spec: Rscript r_runner.R SPEC.json
# The outcome is written atomically to spec$result_file, as the Python runtime does.
# dbutils.fs goes through the Python fs module (S3 via boto3), so both languages share one client.

suppressPackageStartupMessages(library(jsonlite))

.dsb <- new.env()
.dsb$args <- commandArgs(trailingOnly = TRUE)
.dsb$spec <- jsonlite::fromJSON(.dsb$args[1], simplifyVector = FALSE)
.dsb$params <- .dsb$spec$params
.dsb$defaults <- list()

dbutils.widgets.get <- function(name) {
  if (!is.null(.dsb$params[[name]])) return(as.character(.dsb$params[[name]]))
  if (!is.null(.dsb$defaults[[name]])) return(as.character(.dsb$defaults[[name]]))
  stop(sprintf("InputWidgetNotDefined: No input widget named %s is defined", name), call. = FALSE)
}
dbutils.widgets.getArgument <- function(name, optional = NULL) {
  tryCatch(dbutils.widgets.get(name), error = function(e) optional)
}
getArgument <- dbutils.widgets.getArgument
dbutils.widgets.text <- function(name, defaultValue = "", label = NULL) {
  .dsb$defaults[[name]] <- as.character(defaultValue)
  invisible(NULL)
}
dbutils.widgets.dropdown <- function(name, defaultValue, choices, label = NULL) {
  if (!(as.character(defaultValue) %in% as.character(unlist(choices)))) {
    stop(sprintf("Default value %s is not one of the choices", defaultValue), call. = FALSE)
  }
  .dsb$defaults[[name]] <- as.character(defaultValue)
  invisible(NULL)
}
dbutils.widgets.combobox <- function(name, defaultValue, choices, label = NULL) {
  .dsb$defaults[[name]] <- as.character(defaultValue)
  invisible(NULL)
}
dbutils.widgets.removeAll <- function() {
  .dsb$defaults <- list()
  invisible(NULL)
}
dbutils.widgets.help <- function() {
  cat("dbutils.widgets provides utilities for working with notebook widgets.\n")
  cat("get(name), getArgument(name, optional), text(name, defaultValue, label), dropdown(name, defaultValue, choices, label),\n")
  cat("combobox(name, defaultValue, choices, label), removeAll()\n")
  invisible(NULL)
}

dbutils.secrets.get <- function(scope, key) {
  file <- Sys.getenv("DSBRIDGE_SECRETS_FILE")
  scopes <- if (nzchar(file)) jsonlite::fromJSON(file, simplifyVector = FALSE) else list()
  value <- scopes[[scope]][[key]]
  if (is.null(value)) {
    stop(sprintf("IllegalArgumentException: Secret does not exist with scope: %s and key: %s", scope, key), call. = FALSE)
  }
  value
}

# The Python runtime runs the child (a run of the emulator, or a process under `dsbridge notebook run`).
dbutils.notebook.run <- function(path, timeout_seconds = 0, arguments = list()) {
  args <- c(
    "-m", "dsbridge_local.emulator.runtime.children", shQuote(path), as.character(timeout_seconds),
    shQuote(as.character(jsonlite::toJSON(lapply(arguments, as.character), auto_unbox = TRUE)))
  )
  out <- .dsb$python(args)
  if (length(out) > 1) cat(out[-length(out)], sep = "\n")  # the child's log, under `dsbridge notebook run`
  answer <- jsonlite::fromJSON(out[length(out)], simplifyVector = FALSE)
  if (!is.null(answer$error)) stop(paste0("WorkflowException: ", answer$error), call. = FALSE)
  answer$result
}

dbutils.notebook.exit <- function(value) {
  cond <- structure(
    class = c("dsbridge_exit", "condition"),
    list(message = "dbutils.notebook.exit", call = NULL, value = paste(as.character(value), collapse = ""))
  )
  stop(cond)
}

# Runs a helper of the Python runtime (fs, notebook.run): one client and one behaviour for both languages.
.dsb$python <- function(args, input = NULL) {
  python <- Sys.getenv("DSBRIDGE_PYTHON", "python3")
  errfile <- tempfile()
  # R puts its own libraries first on LD_LIBRARY_PATH, which breaks Python's ssl module: give the
  # Python helper the library path the emulator itself had.
  r_libs <- Sys.getenv("LD_LIBRARY_PATH")
  Sys.setenv(LD_LIBRARY_PATH = Sys.getenv("DSBRIDGE_LD_LIBRARY_PATH"))
  on.exit({
    Sys.setenv(LD_LIBRARY_PATH = r_libs)
    unlink(errfile)
  })
  out <- suppressWarnings(system2(python, args, stdout = TRUE, stderr = errfile, input = input))
  status <- attr(out, "status")
  if (!is.null(status) && status != 0) {
    stop(paste(readLines(errfile, warn = FALSE), collapse = "\n"), call. = FALSE)
  }
  out
}
.dsb$fs <- function(op, path, arg = NULL, input = NULL) {
  args <- c("-m", "dsbridge_local.emulator.runtime.fs", op, shQuote(path))
  if (!is.null(arg)) args <- c(args, shQuote(arg))
  paste(.dsb$python(args, input = input), collapse = "\n")
}
dbutils.fs.put <- function(file, contents, overwrite = FALSE) {
  .dsb$fs("put", file, if (isTRUE(overwrite)) "true" else "false", input = contents) == "true"
}
dbutils.fs.head <- function(file, maxBytes = 65536) .dsb$fs("head", file, as.character(maxBytes))
dbutils.fs.ls <- function(dir) jsonlite::fromJSON(.dsb$fs("ls", dir))
dbutils.fs.rm <- function(dir, recurse = FALSE) {
  .dsb$fs("rm", dir, if (isTRUE(recurse)) "true" else "false") == "true"
}
dbutils.fs.mkdirs <- function(dir) .dsb$fs("mkdirs", dir) == "true"

display <- function(x, ...) print(x)
displayHTML <- function(html) cat(html, "\n")

.dsb$write_outcome <- function(outcome) {
  path <- .dsb$spec$result_file
  tmp <- paste0(path, ".tmp")
  writeLines(jsonlite::toJSON(outcome, auto_unbox = TRUE, null = "null"), tmp, useBytes = TRUE)
  file.rename(tmp, path)
}

.dsb$format_calls <- function(calls) {
  lines <- character(0)
  for (call in calls) {
    text <- paste(deparse(call, nlines = 1L), collapse = "")
    ref <- attr(call, "srcref")
    where <- ""
    if (!is.null(ref)) {
      file <- attr(ref, "srcfile")$filename
      where <- sprintf(" at %s#%d", if (is.null(file)) "?" else file, ref[1])
    }
    lines <- c(lines, paste0("  ", text, where))
  }
  paste(lines, collapse = "\n")
}

.dsb$run <- function() {
  trace <- NULL
  outcome <- tryCatch(
    withCallingHandlers(
      {
        for (cell in .dsb$spec$cells) {
          .dsb$cell <- cell
          padded <- paste0(strrep("\n", cell$line - 1), cell$code)
          exprs <- parse(text = padded, keep.source = TRUE, srcfile = srcfilecopy(cell$file, strsplit(padded, "\n")[[1]]))
          for (expr in exprs) {
            shown <- withVisible(eval(expr, envir = globalenv()))
            if (shown$visible && !is.null(shown$value)) print(shown$value)
          }
        }
        list(status = "SUCCESS", result = NULL)
      },
      error = function(e) {
        calls <- sys.calls()
        trace <<- .dsb$format_calls(calls[-seq_len(min(length(calls), 6))])
      }
    ),
    dsbridge_exit = function(e) list(status = "SUCCESS", result = e$value),
    error = function(e) {
      call <- conditionCall(e)
      message <- conditionMessage(e)
      error <- if (is.null(call)) paste0("Error: ", message) else {
        paste0("Error in ", paste(deparse(call, nlines = 1L), collapse = ""), ": ", message)
      }
      cell <- .dsb$cell
      where <- if (is.null(cell)) "" else sprintf("(notebook %s, cell %d)", cell$workspace_path, cell$index)
      list(
        status = "FAILED",
        error = error,
        error_trace = paste0(error, "\nCalls:\n", if (is.null(trace)) "" else trace, "\n", where, "\n")
      )
    }
  )
  outcome
}

.dsb$outcome <- .dsb$run()
.dsb$write_outcome(.dsb$outcome)
quit(save = "no", status = if (identical(.dsb$outcome$status, "SUCCESS")) 0 else 1)
